"""The one colour system of the package: colour tables, levels and palettes.

A value becomes a colour in two steps, on screen and in every export alike:

1. :func:`levels`: its level on the scale ``low .. high``, an integer ``0 .. LEVELS - 1``
   (``round((v - low) / (high - low) * (LEVELS - 1))``, clipped at the ends);
2. :func:`palette`: the colour of that level in a colour table.

The widget sends the levels as a palette PNG and gives bqplot the same table for its colour
bar; the exports look the levels up in the same palette.  So the same value gets the same RGB
on screen and in SVG, PNG, PDF and HTML.

Tables: 65 evenly spaced samples of the matplotlib colormaps of the same name (sRGB, hex),
interpolated linearly.  All are perceptually ordered and readable with the common
colour-vision deficiencies (viridis family, cividis; ColorBrewer RdBu and PuOr; greys).
Attention weights use a sequential table on the fixed scale 0 .. 1; signed arrays (X, Q, K,
V, scores, outputs) the diverging table paired with it on a scale symmetric around 0, whose end
:func:`symmetric_limit` rounds to a readable number; one scale per step of the diagram (X;
Q, K, V; scores; head outputs; concat and output), shared by all its heads.

Which scale a stage's panels get is a choice (:data:`SCALE_MODES`), decided by
:func:`scale_limits` for the screen and every export alike:

* ``"shared"``: one symmetric scale for every panel of the step, to its largest ``|value|``;
* ``"per head"``: each panel (head) its own symmetric scale, to its own largest ``|value|``;
* ``"robust"``: one symmetric scale to the 99th percentile of ``|values|`` of the step: the
  few values beyond it are drawn in the colour of the end, and the scale says so
  (``Limits.clipped``);
* for the weights (:data:`WEIGHT_SCALE_MODES`): ``"fixed"`` 0 .. 1, or ``"per head"`` 0 .. each
  head's largest weight (rounded up as :func:`symmetric_limit` does), for diffuse heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = [
    "DIVERGING",
    "DROPPED_RGB",
    "K_COLOR",
    "LATENT_COLOR",
    "LEVELS",
    "MASK_HATCH_RGB",
    "MASK_RGB",
    "PAIRED_DIVERGING",
    "Q_COLOR",
    "ROBUST_PERCENTILE",
    "SCALE_MODES",
    "SEQUENTIAL",
    "V_COLOR",
    "WEIGHT_SCALE_MODES",
    "Limits",
    "as_drawn",
    "check_colormap",
    "hex_colors",
    "levels",
    "palette",
    "scale_limits",
    "symmetric_limit",
    "to_rgb",
]

LEVELS = 253  # colour levels of a scale; odd, so 0 on a symmetric scale is level 126 exactly
MASK_RGB = (150, 150, 150)  # masked cells: one grey, never a colour of the scale
#: The lines the static exports draw across masked cells (a hatch that survives printing in
#: grey, where MASK_RGB alone could pass for a value of the "greys" table).
MASK_HATCH_RGB = (255, 255, 255)
#: Keys a top-k step dropped (allowed by the mask, but not among the query's k best): a
#: light rose that no colour table holds, so it reads apart from the masked grey.
DROPPED_RGB = (244, 204, 214)
#: The colour of each role, in every view: queries, keys, values, and the latent c_kv.
Q_COLOR, K_COLOR, V_COLOR, LATENT_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b"

#: Sequential tables (the weights; the choice offered to users as "colours").
SEQUENTIAL = ("viridis", "cividis", "magma", "greys")
#: Diverging tables (signed arrays: negative blue/purple, positive red/orange; "greys_sym"
#: shows magnitude only, black at both ends, for greyscale printing).
DIVERGING = ("RdBu_r", "PuOr_r", "greys_sym")
#: The diverging table drawn beside each sequential one.
PAIRED_DIVERGING = {
    "viridis": "RdBu_r",
    "cividis": "PuOr_r",
    "magma": "RdBu_r",
    "greys": "greys_sym",
}

#: Colour scales of signed stages, and of the weights (see :func:`scale_limits`).
SCALE_MODES = ("shared", "per head", "robust")
WEIGHT_SCALE_MODES = ("fixed", "per head")
#: The robust scale ends at this percentile of ``|values|``.
ROBUST_PERCENTILE = 99.0

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


@cache
def _table(name: str) -> np.ndarray:
    """The ``(65, 3)`` float samples of a table."""
    if name == "greys_sym":  # black (-max) .. white (0) .. black (+max): greys folded at 0
        return _table("greys")[np.abs(np.arange(-64, 65, 2))]
    hexes = _TABLES[name]
    rgb = [[int(hexes[i + c : i + c + 2], 16) for c in (0, 2, 4)] for i in range(0, len(hexes), 6)]
    out = np.array(rgb, dtype=np.float64)
    out.flags.writeable = False  # shared by every caller
    return out


def check_colormap(name: object, kinds: tuple[str, ...] = SEQUENTIAL + DIVERGING,
                   argument: str = "colormap") -> str:
    """Return ``name`` if it is one of ``kinds``; else raise ValueError naming ``argument``."""
    if not isinstance(name, str) or name not in kinds:
        raise ValueError(f"{argument} must be one of {kinds}, got {name!r}")
    return name


def hex_colors(name: str) -> list[str]:
    """The table's samples as ``#rrggbb`` strings (a bqplot ``ColorScale``'s ``colors``)."""
    return ["#{:02x}{:02x}{:02x}".format(*map(int, row)) for row in _table(check_colormap(name))]


@cache
def palette(name: str) -> np.ndarray:
    """The ``(LEVELS, 3)`` uint8 colour of every level of table ``name``.

    Level ``k`` is the table read at ``k / (LEVELS - 1)`` with linear interpolation between
    its evenly spaced samples, each channel rounded: the way bqplot's ``ColorScale`` (d3's
    ``scaleLinear`` with RGB interpolation) draws the same samples in the colour bar.
    """
    anchors = _table(check_colormap(name))
    t = np.linspace(0.0, len(anchors) - 1, LEVELS)  # [LEVELS] positions in the table
    k = np.minimum(t.astype(int), len(anchors) - 2)
    f = (t - k)[:, None]
    out = np.floor(anchors[k] + (anchors[k + 1] - anchors[k]) * f + 0.5).astype(np.uint8)
    out.flags.writeable = False  # shared by every caller
    return out


def symmetric_limit(peak: float) -> float:
    """The end ``L`` of a symmetric scale ``-L .. L`` for values up to ``|peak|``.

    ``peak`` rounded up to the next of 1, 1.5, 2, 3, 4, 5, 6 or 8 times a power of ten: a
    stable, readable range (a small change of the values rarely changes it, and at most a third
    of the scale goes unused).  1.0 when ``peak`` is 0 or not finite.
    """
    if not np.isfinite(peak) or peak <= 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(peak))
    for step in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0):
        if peak <= step * power * (1 + 1e-12):
            return float(step * power)
    return float(10.0 * power)


def as_drawn(values: np.ndarray) -> np.ndarray:
    """An array as the diagram holds it to colour it: float32, on screen and in every export.

    Float64 instead when a value lies beyond float32's range (your own arrays of 1e20 give
    scores of 1e40): a float32 copy would hold infinities, and the scale would end nowhere.

    Parameters
    ----------
    values : array_like of finite numbers, any shape

    Returns
    -------
    ndarray of float32 (or float64), same shape
    """
    a = np.asarray(values)
    if a.dtype == np.float32:
        return a
    with np.errstate(over="ignore"):  # beyond float32: infinities, found below
        drawn = a.astype(np.float32)
    if a.size and not (np.isfinite(drawn.max()) and np.isfinite(drawn.min())):
        return a.astype(np.float64, copy=False)
    return drawn


def levels(values: np.ndarray, low: float, high: float, out: np.ndarray | None = None
           ) -> np.ndarray:
    """The colour level of each value on the scale ``low .. high``.

    Parameters
    ----------
    values : array_like, any shape
        Finite numbers; values beyond an end get that end's level.
    low, high : float
        The ends of the scale, ``low < high``.
    out : ndarray of uint8, same shape, optional

    Returns
    -------
    ndarray of uint8, same shape as ``values``
        ``round((v - low) / (high - low) * (LEVELS - 1))`` clipped to ``0 .. LEVELS - 1``: a
        cell's colour is its value's to within half a level, 0.2 % of the scale.
    """
    span, big = high - low, float(np.finfo(np.float32).max)
    if (LEVELS - 1) / span < big and max(-low, high) < big:  # float32, as drawn
        with np.errstate(over="ignore"):  # values beyond float32: +-inf, the end's level
            t = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(
                (LEVELS - 1) / span)
    else:  # a scale beyond float32: too narrow (scores soft-capped to 1e-300) or too wide
        t = (np.asarray(values, dtype=np.float64) - low) / span * (LEVELS - 1)
    np.clip(t, 0.0, LEVELS - 1, out=t)
    t += 0.5
    if out is None:
        return t.astype(np.uint8)
    np.copyto(out, t, casting="unsafe")
    return out


def to_rgb(values: np.ndarray, name: str, low: float, high: float) -> np.ndarray:
    """Colours of ``values`` on table ``name`` over ``low .. high``: ``palette[levels]``.

    Returns
    -------
    ndarray of uint8, shape values.shape + (3,)
    """
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low!r}, high={high!r}")
    return palette(name)[levels(np.nan_to_num(np.asarray(values, dtype=np.float64)), low, high)]


@dataclass(frozen=True)
class Limits:
    """The ends of one panel's colour scale.

    Attributes
    ----------
    low, high : float
        ``-L .. L`` for signed stages, ``0 .. high`` for the weights.
    clipped : bool
        Some values of the panel lie beyond an end (drawn in the end's colour).
    mode : str
        The rule that chose them (:data:`SCALE_MODES` or :data:`WEIGHT_SCALE_MODES`).
    """

    low: float
    high: float
    clipped: bool = False
    mode: str = "shared"


def check_scale_mode(mode: object, signed: bool, argument: str = "scale") -> str:
    """Return ``mode`` if it is a scale of a signed stage (or of the weights); else ValueError."""
    return check_colormap(mode, SCALE_MODES if signed else WEIGHT_SCALE_MODES, argument)


def scale_limits(arrays: Sequence[np.ndarray], mode: str, *, signed: bool) -> list[Limits]:
    """The colour scale of each panel of one step of the diagram.

    Parameters
    ----------
    arrays : sequence of ndarray
        The step's panels (any shapes), as drawn (:func:`as_drawn`), on screen and in every
        export.
    mode : str
        ``"shared"``, ``"per head"`` or ``"robust"`` for signed stages; ``"fixed"`` or
        ``"per head"`` for the weights (``signed=False``).  See the module docstring.
    signed : bool
        A stage on a scale symmetric around 0 (everything but the weights).

    Returns
    -------
    list of Limits, one per array
        ``clipped`` is True where a panel holds values beyond its ends.
    """
    mode = check_scale_mode(mode, signed)
    peaks = [float(np.max(np.abs(a), initial=0.0)) for a in arrays]
    if not signed:
        if mode == "fixed":
            return [Limits(0.0, 1.0, False, mode) for _ in arrays]
        return [Limits(0.0, min(symmetric_limit(p), 1.0), False, mode) for p in peaks]
    if mode == "per head":
        return [Limits(-symmetric_limit(p), symmetric_limit(p), False, mode) for p in peaks]
    peak = max(peaks, default=0.0)
    if mode == "robust" and arrays:
        flat = np.concatenate([np.abs(as_drawn(a)).ravel() for a in arrays])
        end = float(np.percentile(flat, ROBUST_PERCENTILE)) if flat.size else 0.0
        if np.isfinite(end) and 0.0 < end < peak:
            return [Limits(-end, end, p > end, mode) for p in peaks]
    limit = symmetric_limit(peak)
    return [Limits(-limit, limit, False, mode) for _ in arrays]
