"""Export an attention diagram: SVG (pure Python), PNG/PDF (matplotlib), standalone HTML.

Every function takes an :class:`~attention_widget.engine.AttentionTrace`, so it works on a
widget's state (``w.trace``) or on any trace computed in a script.

* :func:`diagram_svg` draws the diagram as an SVG string with nothing but NumPy and the standard
  library: heatmaps as ``<rect>`` cells (or an embedded PNG for large panels), tokens and titles
  as real ``<text>``, one colour bar per stage.
* :func:`save_figure` writes ``.svg`` (pure), ``.png`` or ``.pdf`` (matplotlib, the optional
  ``export`` extra); the vector formats keep text as text.
* :func:`to_html` writes one offline HTML page (no network, no CDN) that can switch between
  several precomputed traces without a kernel.

Colour meanings are the same everywhere: attention weights on the fixed sequential scale
0..1; every signed array (X, Q, K, V, scores, outputs) on a diverging scale symmetric around 0,
shared by all heads of a stage; masked cells hatched grey, never drawn as 0.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine import AttentionTrace

__all__ = [
    "DIVERGING_COLORMAPS",
    "PAIRED_DIVERGING",
    "SEQUENTIAL_COLORMAPS",
    "STAGES",
    "colormap_rgb",
    "diagram_data_url",
    "diagram_png_bytes",
    "diagram_svg",
    "download_link",
    "encode_png",
    "save_figure",
    "to_html",
]

#: Stage names accepted by ``stages=``, in the order of the computation.
STAGES = ("x", "q", "k", "v", "scores", "weights", "outputs", "concat", "output")

# Colour tables: 65 evenly spaced samples of the matplotlib colormaps of the same name (sRGB,
# hex), interpolated linearly.  All are perceptually ordered and readable with the common
# colour-vision deficiencies (viridis family, cividis; ColorBrewer RdBu / PuOr; Greys).
_TABLES = {
    "viridis": (
        "44015446065a470d6047136548186a481d6f482374482878472d7b46327e453681443b84424086404587"
        "3f49893d4e8a3b528b39568c375a8d355e8d33638d31668e2f6a8e2e6e8e2c728e2b768e297a8e287d8e"
        "26818e25858e23898e228c8d21908c20948c1f988b1e9b8a1f9f8820a38721a68524aa8328ae802cb17e"
        "31b57b37b8773ebc7445bf704cc26c54c6675dc96365cc5d6ece5878d15282d34c8cd64696d83fa0da39"
        "abdc32b5de2bc0df24cbe11fd5e21ae0e318eae51af4e61efde725"
    ),
    "cividis": (
        "00224e00255400285b002b62002e6a0030700433711135701a386f213b6e273e6e2d416d32436d36466c"
        "3b496c3f4c6c434e6c47516c4b546c4f576c52596d565c6d5a5f6e5d626e61656f646770686a716b6d72"
        "6f70737273747576767978777c7b78807e788481798784788b87788f8a78938d789790779b93769f9676"
        "a39a75a79d74aba072afa371b3a670b7aa6ebbad6cbfb06bc3b469c8b766ccba64d0be61d4c15fd9c55c"
        "ddc958e1cc55e6d051ead44cefd748f4db42f8df3cfde334fee838"
    ),
    "magma": (
        "00000402010903031106051a0a08220e0b2b130d33180f3d1d114622115028115a2f116336106a3d0f71"
        "430f764a107950127c57147e5d177f631980691c816f1e817621817c23828226818928818f2a81952c80"
        "9c2e7fa2307ea9327daf347bb63779bc3977c33b75c93e72cf4170d6446ddb486ae14c66e65163ea5661"
        "ee5c5ef2635df5695cf7715cf9785dfa805efb8761fc8f64fd9668fe9e6cfea571fead76feb47bfebb81"
        "fec387feca8dfed194fed99bfde0a2fde7a9fceeb0fcf6b8fcfdbf"
    ),
    "greys": (
        "fffffffdfdfdfbfbfbf9f9f9f8f8f8f6f6f6f4f4f4f2f2f2f0f0f0edededeaeaeae7e7e7e4e4e4e2e2e2"
        "dfdfdfdcdcdcd9d9d9d6d6d6d2d2d2cecececbcbcbc8c8c8c4c4c4c0c0c0bdbdbdb8b8b8b3b3b3aeaeae"
        "aaaaaaa5a5a5a0a0a09b9b9b9696969292928d8d8d8989898484848080807c7c7c7777777373736f6f6f"
        "6b6b6b6767676262625e5e5e5a5a5a5656565252524c4c4c4747474141413c3c3c3636363030302b2b2b"
        "2525252020201c1c1c1717171212120e0e0e090909050505000000"
    ),
    "RdBu_r": (
        "05306109386d0e41781249841752901b5a9c1f63a7246aae2a71b22f78b5347fb93986bd3f8dc04595c4"
        "529cc85ea4cc6bacd077b4d583bcd990c3dd9ac9e0a4cee3aed3e6b7d8e9c1ddeccbe2eed3e6f0d9e9f2"
        "dfecf3e5eff4ebf1f5f1f4f6f7f7f6f8f3f0f9eee8faeae0fbe6d9fce1d2fdddcafcd6c1fbcdb6f9c5ab"
        "f8bda0f7b495f5ac8bf3a380ee9878ea8d70e58267e0785fdc6d57d7624fd25749cc4c43c6403ec13539"
        "bb2a34b51f2ead162aa21328960f268a0b257e082373042167001f"
    ),
    "PuOr_r": (
        "2d004b330655390c5e3f12684518714b1e7b522584582e8b5f3a916646976d529c745ea27b6aa88275ad"
        "897eb39186b9998fbfa198c5a9a1cbb0a9d1b7b1d5bdb8d9c3c0ddc9c7e1cfcee5d4d6e9dadcecdfe0ee"
        "e4e5f0e8e9f1edeef3f2f2f5f7f6f6f8f3edf9f0e3faecd9fbe9cefce5c4fee1bafedcaefed6a1fed094"
        "fdca87fdc37afdbd6dfcb661f8ae54f3a548ee9d3cea952fe58c23e18416da7d12d37610cc700ec5690c"
        "be620ab75c07b05606a85206a04d079749078f44078740087f3b08"
    ),
}
#: Names accepted by ``colormap=`` (the sequential scale of the attention weights).
SEQUENTIAL_COLORMAPS = ("viridis", "cividis", "magma", "greys")
#: Names accepted by ``diverging=`` (signed arrays: negative blue/purple, positive red/orange;
#: "greys_sym" shows magnitude only, black at both ends, for greyscale printing).
DIVERGING_COLORMAPS = ("RdBu_r", "PuOr_r", "greys_sym")
#: The diverging scale used with each sequential one when ``diverging=None`` (as the widget).
PAIRED_DIVERGING = {
    "viridis": "RdBu_r",
    "cividis": "PuOr_r",
    "magma": "RdBu_r",
    "greys": "greys_sym",
}

_MASK_LIGHT = (217, 217, 217)  # hatch background of masked cells (#d9d9d9)
_MASK_DARK = (136, 136, 136)  # hatch lines (#888888)
_FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_MAX_WIDTH = 1400  # px; panels wrap onto a new line beyond this
_BAR_W = 90  # px reserved for a stage's colour bar
_GAP = 14


def _table(name: str) -> np.ndarray:
    hexes = _TABLES[name]
    return np.array(
        [[int(hexes[i + c : i + c + 2], 16) for c in (0, 2, 4)] for i in range(0, len(hexes), 6)],
        dtype=np.float64,
    )


_LUTS = {name: _table(name) for name in _TABLES}
# black (-max) .. white (0) .. black (+max): the greys table folded around 0
_LUTS["greys_sym"] = _LUTS["greys"][np.abs(np.arange(-64, 65, 2))]


def colormap_rgb(values: Any, colormap: str, vmin: float, vmax: float) -> np.ndarray:
    """Map values to sRGB colours with one of the built-in colour tables.

    Parameters
    ----------
    values : array_like, any shape
        The numbers to colour; values outside ``[vmin, vmax]`` get the end colours.
    colormap : str
        One of :data:`SEQUENTIAL_COLORMAPS` or :data:`DIVERGING_COLORMAPS`.
    vmin, vmax : float
        The values mapped to the first and last colour (``vmin < vmax``).

    Returns
    -------
    ndarray of uint8, shape values.shape + (3,)
    """
    if colormap not in _LUTS:
        raise ValueError(
            f"colormap must be one of {SEQUENTIAL_COLORMAPS + DIVERGING_COLORMAPS}, "
            f"got {colormap!r}"
        )
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"need finite vmin < vmax, got vmin={vmin!r}, vmax={vmax!r}")
    lut = _LUTS[colormap]
    t = (np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin)
    pos = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * (len(lut) - 1)
    i0 = np.minimum(pos.astype(np.intp), len(lut) - 2)
    frac = (pos - i0)[..., None]
    rgb = lut[i0] * (1.0 - frac) + lut[i0 + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an ``(height, width, 3)`` uint8 image as PNG bytes (zlib only, no dependency)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must have shape (height, width, 3), got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # filter byte 0 ("None") on every row
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_trace(trace: object, name: str = "trace") -> AttentionTrace:
    if not isinstance(trace, AttentionTrace):
        raise TypeError(
            f"{name} must be an AttentionTrace (from multi_head_attention or w.trace), "
            f"got {type(trace).__name__}"
        )
    return trace


def _check_tokens(tokens: object, seq_len: int, name: str = "tokens") -> list[str]:
    if tokens is None:
        return [str(i) for i in range(seq_len)]
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(tokens).__name__}")
    tokens = list(tokens)
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be a list of str, got an element {bad[0]!r}")
    if len(tokens) != seq_len:
        raise ValueError(
            f"{name} has {len(tokens)} entries but the trace has seq_len={seq_len}: "
            "give one token per row of x"
        )
    return tokens


def _check_stages(stages: object) -> list[str]:
    if stages is None:
        return list(STAGES)
    if isinstance(stages, str):
        stages = [stages]
    if not isinstance(stages, Sequence) and not isinstance(stages, (set, frozenset)):
        raise TypeError(f"stages must be a list of stage names, got {type(stages).__name__}")
    out: list[str] = []
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"stages contains unknown stage {s!r}; the stages are {STAGES}")
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError(f"stages is empty; choose at least one of {STAGES}")
    return [s for s in STAGES if s in out]  # always in computation order


def _check_heads(heads: object, n_heads: int) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    if isinstance(heads, numbers.Integral) and not isinstance(heads, bool):
        heads = [heads]
    if isinstance(heads, (str, bytes)) or not isinstance(heads, (Sequence, np.ndarray, set)):
        raise TypeError(f"heads must be a list of head indices, got {type(heads).__name__}")
    out: list[int] = []
    for h in heads:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise TypeError(f"heads must hold integers, got {h!r} ({type(h).__name__})")
        if not 0 <= int(h) < n_heads:
            raise ValueError(
                f"heads contains {int(h)} but the trace has n_heads={n_heads}: "
                f"use indices 0..{n_heads - 1}"
            )
        if int(h) not in out:
            out.append(int(h))
    if not out:
        raise ValueError(f"heads is empty; choose at least one of 0..{n_heads - 1}")
    return sorted(out)


def _check_colormap(colormap: object, diverging: object) -> str:
    """Check both scales; return the diverging one (paired with ``colormap`` when None)."""
    if colormap not in SEQUENTIAL_COLORMAPS:
        raise ValueError(f"colormap must be one of {SEQUENTIAL_COLORMAPS}, got {colormap!r}")
    if diverging is None:
        return PAIRED_DIVERGING[colormap]  # type: ignore[index]
    if diverging not in DIVERGING_COLORMAPS:
        raise ValueError(f"diverging must be one of {DIVERGING_COLORMAPS}, got {diverging!r}")
    return diverging  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# layout: a tree of groups, texts and heatmaps in pixel units, drawn by SVG or matplotlib
# --------------------------------------------------------------------------------------------
@dataclass
class _Text:
    x: float
    y: float  # baseline
    text: str
    size: float
    anchor: str = "start"  # start | middle | end
    rotate: float = 0.0  # degrees, SVG sense (negative = counter-clockwise)
    weight: str = "normal"
    cls: str = ""
    full: str | None = None  # untruncated text, shown as a tooltip


@dataclass
class _Heat:
    x: float
    y: float
    cw: int  # cell width, px
    ch: int  # cell height, px
    rgb: np.ndarray  # (rows, cols, 3) uint8
    masked: np.ndarray | None = None  # (rows, cols) bool, True = masked (drawn hatched)
    tips: list[str] | None = None  # one tooltip per cell, row-major
    cls: str = "aw-cells"
    raster: bool = False  # draw as one embedded PNG image instead of one <rect> per cell

    @property
    def width(self) -> int:
        return self.rgb.shape[1] * self.cw

    @property
    def height(self) -> int:
        return self.rgb.shape[0] * self.ch


@dataclass
class _Group:
    cls: str
    attrs: dict[str, str] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)


@dataclass
class _Layout:
    width: int
    height: int
    root: _Group
    title: str


_STAGE_TEXT = {
    "x": ("input X", "one row per token", "(seq_len, d_model)"),
    "q": ("queries Q", "Q = X W_Q, split into heads", "(n_heads, seq_len, d_head)"),
    "k": ("keys K", "K = X W_K, split into key/value heads", "(n_kv_heads, seq_len, d_head)"),
    "v": ("values V", "V = X W_V, split into key/value heads", "(n_kv_heads, seq_len, d_head)"),
    "scores": ("scores", "scores = Q Kᵀ / √d_head", "(n_heads, seq_len, seq_len)"),
    "weights": (
        "attention weights", "weights = softmax(scores / T)", "(n_heads, seq_len, seq_len)"
    ),
    "outputs": ("head outputs", "head_h = weights_h V", "(n_heads, seq_len, d_head)"),
    "concat": ("concat", "concat = [head_0 … head_(n-1)]", "(seq_len, d_model)"),
    "output": ("output", "output = concat W_O", "(seq_len, d_model)"),
}
_STAGE_ATTR = {"outputs": "head_outputs"}


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _short(token: str, limit: int = 12) -> str:
    token = token.replace("\n", "⏎").replace("\t", "⇥")
    return token if len(token) <= limit else token[: limit - 1] + "…"


def _text_width(text: str, size: float) -> float:
    wide = sum(1 for c in text if ord(c) > 0x2E80)  # CJK and friends are about 1 em wide
    return size * (0.62 * (len(text) - wide) + 1.0 * wide)


def _stage_panels(
    trace: AttentionTrace, stage: str, heads: list[int]
) -> list[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """``(label, head attribute, (rows, cols) array, mask or None)`` for each panel of a stage."""
    arr = getattr(trace, _STAGE_ATTR.get(stage, stage))
    mask = None if trace.mask.all() else ~trace.mask
    if stage in ("x", "concat", "output"):
        return [("", "", arr, None)]
    if stage in ("k", "v"):
        group = trace.n_heads // trace.n_kv_heads
        kv = sorted({trace.kv_head(h) for h in heads})
        out = []
        for g in kv:
            label = f"kv head {g}"
            if group > 1:
                label += f" (heads {g * group}–{(g + 1) * group - 1})"
            out.append((label, str(g), arr[g], None))
        return out
    return [
        (f"head {h}", str(h), arr[h], mask if stage in ("scores", "weights") else None)
        for h in heads
    ]


def _layout(
    trace: AttentionTrace,
    tokens: list[str],
    stages: list[str],
    heads: list[int],
    colormap: str,
    diverging: str,
    title: str | None,
    tooltips: bool,
    vector_stages: frozenset[str] = frozenset(STAGES),
) -> _Layout:
    seq_len = trace.seq_len
    ch = int(min(16, max(2, 280 // seq_len)))  # row height, px: every stage shares the rows
    fs = float(min(11, max(7, ch - 1)))  # token label font size
    step = max(1, math.ceil((fs + 1) / ch))  # label every step-th token when rows are thin
    labels = [_short(t) for t in tokens]
    label_w = int(min(110, max(_text_width(t, fs) for t in labels) + 6))
    col_label_h = int(min(110, max(_text_width(t, fs) for t in labels) + 8))
    if title is None:
        title = (
            f"Multi-head self-attention: seq_len={seq_len}, d_model={trace.d_model}, "
            f"n_heads={trace.n_heads}, n_kv_heads={trace.n_kv_heads}, "
            f"temperature={_fmt(trace.temperature)}"
        )
    root = _Group("aw-diagram")
    root.items.append(_Text(16, 28, title, 16, weight="bold", cls="aw-title"))
    y = 44
    width = 0
    bars: list[tuple] = []
    for stage in stages:
        name, formula, dims = _STAGE_TEXT[stage]
        panels = _stage_panels(trace, stage, heads)
        attr = getattr(trace, _STAGE_ATTR.get(stage, stage))
        if stage == "weights":
            formula = f"weights = softmax(scores / T), T = {_fmt(trace.temperature)}"
            vmin, vmax, cmap = 0.0, 1.0, colormap
        else:
            vals = [
                p[2][~p[3]] if p[3] is not None else p[2] for p in panels
            ]  # masked scores do not set the scale
            m = max((float(np.abs(v).max()) for v in vals if v.size), default=0.0)
            m = m if m > 0 and math.isfinite(m) else 1.0
            vmin, vmax, cmap = -m, m, diverging
        has_mask = any(p[3] is not None and p[3].any() for p in panels)
        g = _Group("aw-stage", {"data-stage": stage})
        g.items.append(_Text(16, y + 14, name, 13, weight="bold", cls="aw-stage-title"))
        g.items.append(
            _Text(
                16 + _text_width(name, 13) + 14,
                y + 14,
                f"{formula}  ·  shape {tuple(attr.shape)} = {dims}",
                12,
                cls="aw-formula",
            )
        )
        y += 26
        # pack panels into lines
        x0 = 16 + label_w
        x = x0
        line_top = y
        line_h = 0
        bar_placed = False
        for label, head, data, mask in panels:
            n_rows, n_cols = data.shape
            token_cols = stage in ("scores", "weights")
            cw = ch if token_cols else int(min(ch, max(1, 256 // n_cols)))
            pw, ph = n_cols * cw, n_rows * ch
            below = col_label_h if token_cols else 16
            if x > x0 and x + pw > _MAX_WIDTH - _BAR_W:
                y = line_top + line_h + _GAP
                line_top, x, line_h = y, x0, 0
            top = line_top + (16 if label else 0)
            pg = _Group("aw-panel", {"data-stage": stage, "data-head": head})
            if label:
                pg.items.append(_Text(x, line_top + 11, label, 11, cls="aw-panel-title"))
            rgb = colormap_rgb(data, cmap, vmin, vmax)
            tips = None
            if tooltips and token_cols:  # query -> key: value, on the square panels only
                tips = [
                    f"{tokens[i]} → {tokens[j]}: "
                    + ("masked" if mask is not None and mask[i, j] else f"{data[i, j]:.4g}")
                    for i in range(n_rows)
                    for j in range(n_cols)
                ]
            raster = stage not in vector_stages
            pg.items.append(_Heat(x, top, cw, ch, rgb, mask, tips, raster=raster))
            if x == x0:  # query / row labels on the first panel of each line
                rl = _Group("aw-row-labels")
                for i in range(0, n_rows, step):
                    rl.items.append(
                        _Text(
                            x - 4,
                            top + i * ch + ch / 2 + fs * 0.35,
                            labels[i],
                            fs,
                            anchor="end",
                            cls="aw-token",
                            full=tokens[i],
                        )
                    )
                pg.items.append(rl)
            cl = _Group("aw-col-labels")
            if token_cols:  # key labels, vertical, hanging below the panel
                for j in range(0, n_cols, step):
                    cl.items.append(
                        _Text(
                            x + j * cw + cw / 2 + fs * 0.35,
                            top + ph + 4,
                            labels[j],
                            fs,
                            anchor="end",
                            rotate=-90,
                            cls="aw-token",
                            full=tokens[j],
                        )
                    )
            else:  # feature columns: first and last index
                cl.items.append(_Text(x, top + ph + 12, "0", 9, cls="aw-dim"))
                if n_cols > 1:
                    cl.items.append(
                        _Text(x + pw, top + ph + 12, str(n_cols - 1), 9, anchor="end", cls="aw-dim")
                    )
            pg.items.append(cl)
            g.items.append(pg)
            if not bar_placed:
                bar_top, bar_h = top, max(60, min(ph, 160))
                bar_placed = True
            x += pw + _GAP
            line_h = max(line_h, top - line_top + ph + below)
            width = max(width, x)
        bars.append((g, bar_top, bar_h, cmap, vmin, vmax, has_mask, stage == "weights"))
        y = line_top + line_h + 2 * _GAP
        root.items.append(g)
    # one column of colour bars at the right edge, each beside its stage's first line
    bx = max(width, x0 + 200) + 8
    for g, bar_top, bar_h, cmap, vmin, vmax, has_mask, fixed in bars:
        g.items.append(_colorbar(bx, bar_top, bar_h, cmap, vmin, vmax, has_mask, fixed))
    width = max(width, bx + _BAR_W)
    return _Layout(int(width + 16), int(y), root, title)


def _colorbar(
    x: float, y: float, h: float, cmap: str, vmin: float, vmax: float, has_mask: bool, fixed: bool
) -> _Group:
    n = 32
    cell_h = max(1, int(h // n))
    vals = np.linspace(vmax, vmin, n)[:, None]  # top = vmax
    g = _Group(
        "aw-colorbar",
        {
            "data-colormap": cmap,
            "data-vmin": repr(float(vmin)),
            "data-vmax": repr(float(vmax)),
            "data-scale": "fixed" if fixed else "symmetric",
        },
    )
    g.items.append(_Heat(x, y, 12, cell_h, colormap_rgb(vals, cmap, vmin, vmax), cls="aw-bar"))
    bottom = y + n * cell_h
    mid = (vmin + vmax) / 2
    for v, ty in ((vmax, y), (mid, (y + bottom) / 2), (vmin, bottom)):
        g.items.append(_Text(x + 16, ty + 3.5, _fmt(v), 10, cls="aw-tick"))
    if has_mask:
        sw = np.zeros((1, 1, 3), np.uint8)
        g.items.append(_Heat(x, bottom + 8, 12, 12, sw, np.ones((1, 1), bool), cls="aw-bar-mask"))
        g.items.append(_Text(x + 16, bottom + 18, "masked", 10, cls="aw-tick"))
    return g


# --------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------
def _esc(text: str) -> str:
    # XML 1.0 forbids most control characters even as references: drop them.
    text = "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)
    return html.escape(text, quote=True)


def _hatched_rgb(heat: _Heat) -> np.ndarray:
    """Upscale a heatmap to pixels, drawing masked cells as a grey diagonal hatch."""
    img = np.repeat(np.repeat(heat.rgb, heat.ch, axis=0), heat.cw, axis=1)
    if heat.masked is not None and heat.masked.any():
        m = np.repeat(np.repeat(heat.masked, heat.ch, axis=0), heat.cw, axis=1)
        yy, xx = np.indices(m.shape)
        dark = (yy + xx) % 4 == 0
        img[m & dark] = _MASK_DARK
        img[m & ~dark] = _MASK_LIGHT
    return img


def _svg_heat(heat: _Heat, hatch_id: str, max_rects: int, out: list[str]) -> None:
    rows, cols, _ = heat.rgb.shape
    out.append(f'<g class="{heat.cls}" data-rows="{rows}" data-cols="{cols}">')
    if heat.raster or rows * cols > max_rects:
        data = base64.b64encode(encode_png(_hatched_rgb(heat))).decode("ascii")
        url = f"data:image/png;base64,{data}"
        out.append(
            f'<image x="{heat.x:g}" y="{heat.y:g}" width="{heat.width}" height="{heat.height}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" '
            f'href="{url}" xlink:href="{url}"/>'
        )
    else:
        hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in heat.rgb.reshape(-1, 3).tolist()]
        masked = None if heat.masked is None else heat.masked.reshape(-1).tolist()
        for k, color in enumerate(hexes):
            i, j = divmod(k, cols)
            x, y = heat.x + j * heat.cw, heat.y + i * heat.ch
            if masked is not None and masked[k]:
                attrs = f'fill="url(#{hatch_id})" class="aw-masked"'
            else:
                attrs = f'fill="{color}"'
            rect = f'<rect x="{x:g}" y="{y:g}" width="{heat.cw}" height="{heat.ch}" {attrs}'
            if heat.tips is not None:
                out.append(f"{rect}><title>{_esc(heat.tips[k])}</title></rect>")
            else:
                out.append(rect + "/>")
    out.append("</g>")


def _svg_text(t: _Text, out: list[str]) -> None:
    attrs = f'x="{t.x:.1f}" y="{t.y:.1f}" font-size="{t.size:g}"'
    if t.anchor != "start":
        attrs += f' text-anchor="{t.anchor}"'
    if t.weight != "normal":
        attrs += f' font-weight="{t.weight}"'
    if t.rotate:
        attrs += f' transform="rotate({t.rotate:g} {t.x:.1f} {t.y:.1f})"'
    if t.cls:
        attrs += f' class="{t.cls}"'
    body = _esc(t.text)
    if t.full is not None and t.full != t.text:
        body += f"<title>{_esc(t.full)}</title>"
    out.append(f"<text {attrs}>{body}</text>")


def _svg_node(node: Any, hatch_id: str, max_rects: int, out: list[str]) -> None:
    if isinstance(node, _Group):
        attrs = "".join(f' {k}="{_esc(v)}"' for k, v in node.attrs.items())
        out.append(f'<g class="{node.cls}"{attrs}>')
        for item in node.items:
            _svg_node(item, hatch_id, max_rects, out)
        out.append("</g>")
    elif isinstance(node, _Heat):
        _svg_heat(node, hatch_id, max_rects, out)
    else:
        _svg_text(node, out)


def diagram_svg(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    title: str | None = None,
    diverging: str | None = None,
    max_rects: int = 2500,
    tooltips: bool = False,
    id_prefix: str = "aw-",
    vector_stages: Sequence[str] | str | None = None,
) -> str:
    """Draw the attention diagram as a standalone SVG document, with no plotting library.

    Parameters
    ----------
    trace : AttentionTrace
        What to draw (e.g. ``w.trace`` or the result of ``multi_head_attention``).
    tokens : list of str, optional
        One label per row of ``trace.x``; defaults to the positions ``"0", "1", ...``.
        Labels are XML-escaped, so any text is safe.
    stages : list of str, optional
        Which stages to draw, from :data:`STAGES`; default all.  Always drawn in computation
        order.
    heads : list of int, optional
        Which query heads to draw (default all).  The K and V stages show the key/value heads
        these heads read.
    colormap : str, default "viridis"
        Sequential scale of the attention weights (fixed 0..1), one of
        :data:`SEQUENTIAL_COLORMAPS`.
    title : str, optional
        Title line; defaults to a summary of the trace's sizes.
    diverging : str, optional
        Scale of the signed stages (symmetric around 0), one of :data:`DIVERGING_COLORMAPS`;
        default paired with ``colormap`` as in the widget (:data:`PAIRED_DIVERGING`: blue-red
        for viridis and magma, purple-orange for cividis, black-white-black for greys).
    max_rects : int, default 2500
        Panels with more cells are embedded as one PNG image instead of one ``<rect>`` per cell
        (files stay small; the text stays text either way).
    tooltips : bool, default False
        Give each cell of the scores and weights panels a ``<title>`` ("query → key: value")
        shown on hover in a browser.
    id_prefix : str, default "aw-"
        Prefix of the SVG ids, so several diagrams can share one HTML page.
    vector_stages : list of str, optional
        Stages drawn as ``<rect>`` cells (up to ``max_rects`` per panel); the others are
        embedded PNG images.  Default: every stage.

    Returns
    -------
    str
        An SVG document (``<svg xmlns=...>...</svg>``).

    Raises
    ------
    TypeError, ValueError
        For an invalid argument, naming it.
    """
    svg, _ = _diagram_svg(
        trace, tokens, stages, heads, colormap, title, diverging, max_rects, tooltips, id_prefix,
        vector_stages,
    )
    return svg


def _diagram_svg(
    trace: Any,
    tokens: Any,
    stages: Any,
    heads: Any,
    colormap: Any,
    title: Any,
    diverging: Any,
    max_rects: Any,
    tooltips: bool,
    id_prefix: str,
    vector_stages: Any = None,
) -> tuple[str, _Layout]:
    trace = _check_trace(trace)
    vector = frozenset(STAGES if vector_stages is None else _check_stages(vector_stages))
    layout = _build(trace, tokens, stages, heads, colormap, title, diverging, tooltips, vector)
    if isinstance(max_rects, bool) or not isinstance(max_rects, numbers.Integral):
        raise TypeError(f"max_rects must be an integer, got {max_rects!r}")
    if not isinstance(id_prefix, str) or not all(c.isalnum() or c in "-_" for c in id_prefix):
        raise ValueError(f"id_prefix must be letters, digits, '-' or '_', got {id_prefix!r}")
    hatch = f"{id_prefix}hatch"
    w, h = layout.width, layout.height
    light = "#{:02x}{:02x}{:02x}".format(*_MASK_LIGHT)
    dark = "#{:02x}{:02x}{:02x}".format(*_MASK_DARK)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{_FONT}" '
        f'class="aw-diagram">',
        f"<title>{_esc(layout.title)}</title>",
        f'<defs><pattern id="{hatch}" patternUnits="userSpaceOnUse" width="4" height="4">'
        f'<rect width="4" height="4" fill="{light}"/>'
        f'<path d="M-1,1 l2,-2 M0,4 l4,-4 M3,5 l2,-2" stroke="{dark}" stroke-width="1"/>'
        "</pattern></defs>",
        f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    _svg_node(layout.root, hatch, int(max_rects), out)
    out.append("</svg>")
    return "\n".join(out) + "\n", layout


def _build(
    trace: AttentionTrace,
    tokens: Any,
    stages: Any,
    heads: Any,
    colormap: Any,
    title: Any,
    diverging: Any,
    tooltips: bool,
    vector_stages: frozenset[str] = frozenset(STAGES),
) -> _Layout:
    tok = _check_tokens(tokens, trace.seq_len)
    st = _check_stages(stages)
    hd = _check_heads(heads, trace.n_heads)
    diverging = _check_colormap(colormap, diverging)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    return _layout(trace, tok, st, hd, colormap, diverging, title, bool(tooltips), vector_stages)


# --------------------------------------------------------------------------------------------
# matplotlib (PNG, PDF): the same layout, drawn with Figure.text and imshow
# --------------------------------------------------------------------------------------------
def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is installed in CI
        raise ImportError(
            "PNG and PDF export need matplotlib: pip install attention-widget[export] "
            "(SVG export works without it)"
        ) from err
    return matplotlib, Figure


def _mpl_figure(layout: _Layout, dpi: float) -> Any:
    """One matplotlib Figure with one full-size Axes in layout pixels (y down)."""
    _, figure_cls = _matplotlib()
    from matplotlib.patches import Rectangle

    px = 1 / 96  # inches per layout pixel
    width, height = layout.width, layout.height
    fig = figure_cls(figsize=(width * px, height * px), dpi=dpi, facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    light, dark = np.array(_MASK_LIGHT) / 255, np.array(_MASK_DARK) / 255
    anchors = {"start": "left", "middle": "center", "end": "right"}

    def walk(node: Any) -> None:
        if isinstance(node, _Group):
            for item in node.items:
                walk(item)
        elif isinstance(node, _Heat):
            rgba = np.concatenate(
                [node.rgb, np.full((*node.rgb.shape[:2], 1), 255, np.uint8)], axis=2
            )
            if node.masked is not None and node.masked.any():
                rgba[node.masked, 3] = 0  # transparent: the hatched patch below shows through
                ax.add_patch(
                    Rectangle(
                        (node.x, node.y), node.width, node.height, facecolor=light,
                        edgecolor=dark, hatch="////", linewidth=0, zorder=0,
                    )
                )
            ax.imshow(
                rgba, interpolation="nearest", aspect="auto", zorder=1,
                extent=(node.x, node.x + node.width, node.y + node.height, node.y),
            )
        else:
            ax.text(
                node.x, node.y, node.text, fontsize=node.size * 0.75, ha=anchors[node.anchor],
                va="baseline", rotation=-node.rotate, rotation_mode="anchor",
                fontweight=node.weight, family="DejaVu Sans", zorder=2,
                parse_math=False,  # a token "$x$" is text, not mathtext
            )

    walk(layout.root)
    ax.set_xlim(0, width)  # imshow resets the limits
    ax.set_ylim(height, 0)
    return fig


def _check_dpi(dpi: object) -> float:
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real):
        raise TypeError(f"dpi must be a number, got {dpi!r}")
    if not (10 <= float(dpi) <= 1200):
        raise ValueError(f"dpi must be between 10 and 1200, got {dpi!r}")
    return float(dpi)


def _mpl_bytes(layout: _Layout, fmt: str, dpi: float) -> bytes:
    import io

    matplotlib, _ = _matplotlib()
    fig = _mpl_figure(layout, dpi)
    buf = io.BytesIO()
    # vector formats keep text as text: SVG <text>, PDF embedded TrueType (Type 42)
    # (and each heatmap stays its own small image instead of one page-sized composite)
    rc = {"svg.fonttype": "none", "pdf.fonttype": 42, "image.composite_image": False}
    with matplotlib.rc_context(rc):
        fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white")
    return buf.getvalue()


def diagram_png_bytes(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
) -> bytes:
    """The diagram of :func:`diagram_svg` as PNG bytes (needs matplotlib, the ``export`` extra).

    Parameters are those of :func:`diagram_svg`; ``dpi`` sets the resolution (96 gives one
    image pixel per layout pixel).

    Returns
    -------
    bytes
        A PNG file.
    """
    trace = _check_trace(trace)
    dpi = _check_dpi(dpi)
    layout = _build(trace, tokens, stages, heads, colormap, title, diverging, False)
    return _mpl_bytes(layout, "png", dpi)


def diagram_data_url(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    format: str = "svg",
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
) -> str:
    """A ``data:`` URL of the diagram for a browser download link (``<a download href=...>``).

    Parameters
    ----------
    format : {"svg", "png"}
        SVG needs nothing; PNG needs matplotlib.
    stages, heads, colormap, dpi, title, diverging
        As :func:`diagram_svg` and :func:`diagram_png_bytes`.

    Returns
    -------
    str
        ``data:image/svg+xml;base64,...`` or ``data:image/png;base64,...``.
    """
    if format == "svg":
        svg = diagram_svg(
            trace, tokens, stages=stages, heads=heads, colormap=colormap, title=title,
            diverging=diverging,
        )
        data, mime = svg.encode("utf-8"), "image/svg+xml"
    elif format == "png":
        data = diagram_png_bytes(
            trace, tokens, stages=stages, heads=heads, colormap=colormap, dpi=dpi, title=title,
            diverging=diverging,
        )
        mime = "image/png"
    else:
        raise ValueError(f'format must be "svg" or "png", got {format!r}')
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def download_link(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    format: str = "svg",
    filename: str | None = None,
    label: str | None = None,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
) -> str:
    """An HTML ``<a download>`` link that saves the diagram in the browser (for an HTML widget).

    Parameters
    ----------
    format : {"svg", "png"}
        File type; PNG needs matplotlib.
    filename : str, optional
        Suggested file name; default ``"attention.svg"`` / ``"attention.png"``.
    label : str, optional
        Link text; default ``"Download SVG"`` / ``"Download PNG"``.
    stages, heads, colormap, dpi, title, diverging
        As :func:`diagram_data_url`.

    Returns
    -------
    str
        ``<a class="aw-download aw-download-<format>" download="..." href="data:...">...</a>``,
        with the file name and label HTML-escaped.
    """
    url = diagram_data_url(
        trace, tokens, format=format, stages=stages, heads=heads, colormap=colormap, dpi=dpi,
        title=title, diverging=diverging,
    )
    filename = filename if filename is not None else f"attention.{format}"
    label = label if label is not None else f"Download {format.upper()}"
    if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename:
        raise ValueError(f"filename must be a plain file name, got {filename!r}")
    return (
        f'<a class="aw-download aw-download-{format}" download="{_esc(filename)}" '
        f'href="{url}">{_esc(str(label))}</a>'
    )


_FORMATS = ("svg", "png", "pdf")


def save_figure(
    trace: AttentionTrace,
    path: str | os.PathLike,
    tokens: Sequence[str] | None = None,
    *,
    format: str | None = None,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
) -> Path:
    """Write the diagram to an SVG, PNG or PDF file.

    Parameters
    ----------
    trace : AttentionTrace
        What to draw.
    path : str or PathLike
        Where to write; the suffix (``.svg``, ``.png``, ``.pdf``) chooses the format unless
        ``format`` is given.
    tokens, stages, heads, colormap, title, diverging
        As :func:`diagram_svg`.
    format : {"svg", "png", "pdf"}, optional
        Overrides the suffix.
    dpi : float, default 150
        Resolution of PNG files (and of the few raster parts of a PDF).

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    SVG is written by :func:`diagram_svg` (no dependency, tokens as ``<text>``).  PNG and PDF
    need matplotlib (``pip install attention-widget[export]``); PDF text is embedded TrueType,
    so it stays selectable and searchable.
    """
    trace = _check_trace(trace)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if format is None:
        fmt = p.suffix.lower().lstrip(".")
        if fmt not in _FORMATS:
            raise ValueError(
                f"path {str(p)!r} has suffix {p.suffix!r}; use .svg, .png or .pdf "
                "(or pass format=...)"
            )
    else:
        fmt = str(format).lower().lstrip(".")
        if fmt not in _FORMATS:
            raise ValueError(f'format must be "svg", "png" or "pdf", got {format!r}')
    dpi = _check_dpi(dpi)
    if fmt == "svg":
        data = diagram_svg(
            trace, tokens, stages=stages, heads=heads, colormap=colormap, title=title,
            diverging=diverging,
        ).encode("utf-8")
    else:
        layout = _build(trace, tokens, stages, heads, colormap, title, diverging, False)
        data = _mpl_bytes(layout, fmt, dpi)
    p.write_bytes(data)
    return p


# --------------------------------------------------------------------------------------------
# standalone HTML
# --------------------------------------------------------------------------------------------
def _script_json(value: Any) -> str:
    """JSON safe to place inside ``<script>``: no ``</script>``, ``<!--`` or ``&`` survives."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _mask_name(mask: np.ndarray) -> str:
    """"none", "causal", "sliding(window=w)" or "custom" for a boolean (seq, seq) mask."""
    if mask.all():
        return "none"
    n = mask.shape[0]
    if np.array_equal(mask, np.tri(n, dtype=bool)):
        return "causal"
    window = int(mask.sum(axis=1).max())
    diff = np.arange(n)[:, None] - np.arange(n)[None, :]
    if np.array_equal(mask, (diff >= 0) & (diff < window)):
        return f"sliding(window={window})"
    return "custom"


def _summary(trace: AttentionTrace) -> str:
    mask = _mask_name(trace.mask)
    return (
        f"seq_len={trace.seq_len}, d_model={trace.d_model}, n_heads={trace.n_heads}, "
        f"n_kv_heads={trace.n_kv_heads}, temperature={_fmt(trace.temperature)}, mask={mask}"
    )


_HTML_STYLE = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
.aw-controls { margin: 0.8em 0; }
.aw-controls select { font-size: 1em; }
table.aw-settings { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
table.aw-settings td { border: 1px solid #ccc; padding: 2px 8px; }
.aw-summary { font-family: monospace; }
.aw-variant svg { max-width: none; }
footer { color: #666; font-size: 0.8em; margin-top: 2em; }
"""

_HTML_SCRIPT = """
(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("aw-data").textContent);
  var select = document.getElementById("aw-variant");
  var panes = document.querySelectorAll(".aw-variant");
  function show(index) {
    for (var i = 0; i < panes.length; i++) { panes[i].hidden = (i !== index); }
    document.body.setAttribute("data-variant", String(index));
    document.getElementById("aw-current").textContent = meta.variants[index].summary;
  }
  if (select) {
    select.addEventListener("change", function () { show(select.selectedIndex); });
  }
  show(0);
})();
"""


def to_html(
    trace: AttentionTrace,
    path: str | os.PathLike,
    tokens: Sequence[str] | None = None,
    *,
    variants: Mapping[str, AttentionTrace] | None = None,
    title: str | None = None,
    colormap: str = "viridis",
    settings: Mapping[str, Any] | None = None,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    diverging: str | None = None,
) -> Path:
    """Write one standalone HTML page of the diagram that works offline.

    Parameters
    ----------
    trace : AttentionTrace
        The state shown first (labelled "current").
    path : str or PathLike
        The ``.html`` file to write.
    tokens : list of str, optional
        One label per token (shared by every variant).
    variants : dict of str to AttentionTrace, optional
        Extra precomputed traces (e.g. other temperatures or head counts), chosen with a
        ``<select>`` on the page; switching needs no kernel and no network.
    title : str, optional
        Page heading.
    colormap, diverging, stages, heads
        As :func:`diagram_svg` (``heads=None`` draws every head of each variant).
    settings : dict, optional
        Shown as a table (e.g. the widget's traits).

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    Everything is inline (SVG, CSS, a few lines of JavaScript, JSON data); the page loads no
    resource.  Tokens, labels and settings are escaped, so text such as ``</script>`` or
    ``<img onerror=...>`` is displayed, never run.
    """
    trace = _check_trace(trace)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"path {str(p)!r} must end in .html or .htm")
    items: list[tuple[str, AttentionTrace]] = [("current", trace)]
    if variants is not None:
        if not isinstance(variants, Mapping):
            raise TypeError(
                f"variants must be a dict of label -> AttentionTrace, got {type(variants).__name__}"
            )
        for label, tr in variants.items():
            if not isinstance(label, str):
                raise TypeError(f"variants keys must be str labels, got {label!r}")
            items.append((label, _check_trace(tr, f"variants[{label!r}]")))
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    page_title = title or "Multi-head self-attention"
    panes = []
    meta = []
    for i, (label, tr) in enumerate(items):
        try:
            tok = _check_tokens(tokens, tr.seq_len)
        except ValueError as err:
            raise ValueError(f"variants[{label!r}]: {err}") from None
        hd = heads
        if heads is not None and i > 0:  # keep the heads that exist in this variant
            wanted = _check_heads(heads, trace.n_heads)
            hd = [h for h in wanted if h < tr.n_heads] or None
        # the square panels as cells with hover tooltips; the rest as compact images
        svg, _ = _diagram_svg(
            tr, tok, stages, hd, colormap, None, diverging, 2500,
            tr.seq_len <= 24, f"aw{i}-", ("scores", "weights"),
        )
        summary = _summary(tr)
        meta.append({"label": label, "summary": summary})
        panes.append(
            f'<section class="aw-variant" data-variant="{i}" data-label="{_esc(label)}"'
            f'{" hidden" if i else ""}>\n{svg}</section>'
        )
    options = "".join(
        f'<option value="{i}">{_esc(label)} — {_esc(_summary(tr))}</option>'
        for i, (label, tr) in enumerate(items)
    )
    controls = (
        f'<div class="aw-controls"><label for="aw-variant">Show: </label>'
        f'<select id="aw-variant">{options}</select></div>'
        if len(items) > 1
        else ""
    )
    rows = "".join(
        f"<tr><td>{_esc(str(k))}</td><td>{_esc(str(v))}</td></tr>"
        for k, v in (settings or {}).items()
    )
    table = f'<table class="aw-settings">{rows}</table>' if rows else ""
    data = _script_json({"variants": meta})
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # a strict policy: nothing may be fetched; only the inline script and style run
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        f"<title>{_esc(page_title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n"
        f'<body class="attention-widget-export">\n<h1>{_esc(page_title)}</h1>\n'
        f'{controls}\n<p>Showing: <span id="aw-current" class="aw-summary">'
        f"{_esc(meta[0]['summary'])}</span></p>\n{table}\n"
        + "\n".join(panes)
        + "\n<footer>Weights: fixed scale 0..1; signed arrays: diverging scale symmetric "
        "around 0; hatched cells are masked. Made with attention_widget.</footer>\n"
        f'<script type="application/json" id="aw-data">{data}</script>\n'
        f"<script>{_HTML_SCRIPT}</script>\n</body>\n</html>\n"
    )
    p.write_text(doc, encoding="utf-8")
    return p
