"""SVG: the layout written as a standalone SVG document, with nothing but the standard library.

Heatmaps become one ``<rect>`` per cell (or one embedded PNG for large panels), tokens and
titles real ``<text>``; masked cells are filled with a hatch pattern of
:data:`~attention_widget.colors.MASK_RGB` and :data:`~attention_widget.colors.MASK_HATCH_RGB`.

Colours are those of the widget's figures (:mod:`attention_widget.colors`): weights on the
fixed scale 0..1; each signed stage on a scale symmetric around 0 shared by its step (X; Q, K,
V; scores; head outputs; concat and output) and by every head of the trace, so a value has
one colour whichever stages and heads are drawn.
"""

from __future__ import annotations

import base64
import html
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from ..colors import MASK_HATCH_RGB, MASK_RGB
from ..engine import AttentionTrace
from ..png import rgb_png
from .layout import Group, Heat, Layout, Text, build, check_trace

__all__ = ["FONT", "diagram_svg", "escape", "hatched_pixels", "render"]

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
HATCH_PERIOD = 4  # px between two hatch lines, along x and along y


def escape(text: str) -> str:
    """``text`` safe in XML and HTML text and attributes (control characters dropped)."""
    # XML 1.0 forbids most control characters even as references
    text = "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)
    return html.escape(text, quote=True)


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def hatched_pixels(heat: Heat) -> np.ndarray:
    """The heatmap as an ``(height, width, 3)`` image, masked cells crossed by hatch lines."""
    img = np.repeat(np.repeat(heat.rgb, heat.ch, axis=0), heat.cw, axis=1)
    if heat.masked is not None and heat.masked.any():
        m = np.repeat(np.repeat(heat.masked, heat.ch, axis=0), heat.cw, axis=1)
        yy, xx = np.indices(m.shape)
        img[m & ((yy + xx) % HATCH_PERIOD == 0)] = MASK_HATCH_RGB
    return img


def _heat(heat: Heat, hatch_id: str, max_rects: int, out: list[str]) -> None:
    rows, cols, _ = heat.rgb.shape
    out.append(f'<g class="{heat.cls}" data-rows="{rows}" data-cols="{cols}">')
    if heat.raster or rows * cols > max_rects:
        data = base64.b64encode(rgb_png(hatched_pixels(heat))).decode("ascii")
        url = f"data:image/png;base64,{data}"
        out.append(
            f'<image x="{heat.x:g}" y="{heat.y:g}" width="{heat.width}" height="{heat.height}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" '
            f'href="{url}" xlink:href="{url}"/>'
        )
    else:
        fills = [_hex(c) for c in heat.rgb.reshape(-1, 3).tolist()]
        masked = [False] * len(fills) if heat.masked is None else heat.masked.ravel().tolist()
        for k, fill in enumerate(fills):
            i, j = divmod(k, cols)
            attrs = f'fill="url(#{hatch_id})" class="aw-masked"' if masked[k] else f'fill="{fill}"'
            rect = (f'<rect x="{heat.x + j * heat.cw:g}" y="{heat.y + i * heat.ch:g}" '
                    f'width="{heat.cw}" height="{heat.ch}" {attrs}')
            if heat.tips is not None:
                out.append(f"{rect}><title>{escape(heat.tips[k])}</title></rect>")
            else:
                out.append(rect + "/>")
    out.append("</g>")


def _text(t: Text, out: list[str]) -> None:
    attrs = f'x="{t.x:.1f}" y="{t.y:.1f}" font-size="{t.size:g}"'
    if t.anchor != "start":
        attrs += f' text-anchor="{t.anchor}"'
    if t.weight != "normal":
        attrs += f' font-weight="{t.weight}"'
    if t.rotate:
        attrs += f' transform="rotate({t.rotate:g} {t.x:.1f} {t.y:.1f})"'
    if t.cls:
        attrs += f' class="{t.cls}"'
    body = escape(t.text)
    if t.full is not None and t.full != t.text:
        body += f"<title>{escape(t.full)}</title>"
    out.append(f"<text {attrs}>{body}</text>")


def _node(node: Group | Heat | Text, hatch_id: str, max_rects: int, out: list[str]) -> None:
    if isinstance(node, Group):
        attrs = "".join(f' {k}="{escape(v)}"' for k, v in node.attrs.items())
        out.append(f'<g class="{node.cls}"{attrs}>')
        for item in node.items:
            _node(item, hatch_id, max_rects, out)
        out.append("</g>")
    elif isinstance(node, Heat):
        _heat(node, hatch_id, max_rects, out)
    else:
        _text(node, out)


def render(layout: Layout, max_rects: int = 2500, id_prefix: str = "aw-") -> str:
    """The SVG document of ``layout`` (panels over ``max_rects`` cells as PNG images)."""
    hatch = f"{id_prefix}hatch"
    w, h, p = layout.width, layout.height, HATCH_PERIOD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" '
        f'class="aw-diagram">',
        f"<title>{escape(layout.title)}</title>",
        # masked cells: grey crossed by '/' lines, one per period, as in hatched_pixels
        f'<defs><pattern id="{hatch}" patternUnits="userSpaceOnUse" width="{p}" height="{p}">'
        f'<rect width="{p}" height="{p}" fill="{_hex(MASK_RGB)}"/>'
        f'<path d="M-1,1 l2,-2 M0,{p} l{p},-{p} M{p - 1},{p + 1} l2,-2" '
        f'stroke="{_hex(MASK_HATCH_RGB)}" stroke-width="1"/></pattern></defs>',
        f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    _node(layout.root, hatch, max_rects, out)
    out.append("</svg>")
    return "\n".join(out) + "\n"


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
    scales: Mapping[str, str] | None = None,
    zoom: tuple | None = None,
    key_tokens: Sequence[str] | None = None,
) -> str:
    """Draw the attention diagram as a standalone SVG document, with no plotting library.

    Parameters
    ----------
    trace : AttentionTrace
        What to draw (e.g. ``w.trace`` or the result of ``multi_head_attention``).
    tokens : list of str, optional
        One label per row of ``trace.x``; defaults to the positions ``"0", "1", ...``.
        Labels are XML-escaped, so any text is safe.
    key_tokens : list of str, optional
        One label per key column where the keys are not the tokens (cross-attention's source
        text, a model's extra key entries); default the tokens (or numbers).
    stages : list of str, optional
        Which stages to draw, from :data:`~attention_widget.export.STAGES`; default all.
        Always drawn in computation order.
    heads : list of int, optional
        Which query heads to draw (default all).  The K and V stages show the key/value heads
        these heads read.
    colormap : str, default "viridis"
        Table of the attention weights (fixed scale 0..1), one of
        :data:`attention_widget.colors.SEQUENTIAL`.
    title : str, optional
        Title line; defaults to a summary of the trace.
    diverging : str, optional
        Table of the signed stages, one of :data:`attention_widget.colors.DIVERGING`; default
        paired with ``colormap`` as in the widget (``colors.PAIRED_DIVERGING``).
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
    scales : dict, optional
        The colour scale of each step, as the widget's ``scales`` (``{"scores": "robust"}``;
        default shared, weights 0..1): :func:`attention_widget.colors.scale_limits`.
    zoom : (head, (q0, q1), (k0, k1)), optional
        For a :class:`~attention_widget.long.LongTrace`, whose picture shows each head's
        overview (``stages`` among "scores" and "weights"): also the exact weights of queries
        ``q0 .. q1 - 1`` against keys ``k0 .. k1 - 1`` of ``head``, with token labels.

    Returns
    -------
    str
        An SVG document (``<svg xmlns=...>...</svg>``).

    Raises
    ------
    TypeError, ValueError
        For an invalid argument, naming it.  (Colours: see the module docstring; masked cells
        are grey, hatched with white lines.)
    """
    layout = build(check_trace(trace), tokens, stages, heads, colormap, title, diverging,
                   tooltips, vector_stages, scales=scales, zoom=zoom, key_tokens=key_tokens)
    if isinstance(max_rects, bool) or not isinstance(max_rects, numbers.Integral):
        raise TypeError(f"max_rects must be an integer, got {max_rects!r}")
    if not isinstance(id_prefix, str) or not all(c.isalnum() or c in "-_" for c in id_prefix):
        raise ValueError(f"id_prefix must be letters, digits, '-' or '_', got {id_prefix!r}")
    return render(layout, int(max_rects), id_prefix)
