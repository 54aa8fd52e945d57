"""One colour system: the tables, the PNG encoder, and the same RGB for the same value on
screen (the widget's palette PNG) and in every export (SVG, PNG, PDF, HTML)."""

from __future__ import annotations

import base64
import functools
import io
import re
import warnings
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import colormaps
from PIL import Image

from attention_widget import AttentionWidget
from attention_widget.colors import (
    DIVERGING,
    LEVELS,
    MASK_HATCH_RGB,
    MASK_RGB,
    PAIRED_DIVERGING,
    SCALE_MODES,
    SEQUENTIAL,
    hex_colors,
    levels,
    palette,
    scale_limits,
    symmetric_limit,
    to_rgb,
)
from attention_widget.export import diagram_svg, save_figure, to_html
from attention_widget.png import palette_png, rgb_png
from attention_widget.stages import SECTIONS, stage

SVG = "{http://www.w3.org/2000/svg}"
_MPL_NAME = {"greys": "Greys", "greys_sym": "Greys"}

#: The detailed view (one section per stage): what these tests look at.
Detailed = functools.partial(AttentionWidget, view="detailed")


def mpl_scale(name, t) -> np.ndarray:
    """The matplotlib colormap as a continuous scale: its 256 entries (entry k at t = k/255),
    interpolated linearly, in 0..255 units.  "greys_sym" is Greys folded: Greys(|2t - 1|)."""
    lut = colormaps[_MPL_NAME.get(name, name)](np.arange(256) / 255)[:, :3] * 255
    pos = np.clip(np.asarray(t, dtype=float), 0, 1)
    if name == "greys_sym":
        pos = np.abs(2 * pos - 1)
    pos = pos * 255
    return np.stack([np.interp(pos, np.arange(256), lut[:, c]) for c in range(3)], axis=-1)


# --------------------------------------------------------------------------------------------
# the tables, the levels, the encoder
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SEQUENTIAL + DIVERGING)
def test_colour_tables_match_matplotlib(name):
    t = np.linspace(0, 1, 1001)
    ours = to_rgb(t, name, 0.0, 1.0).astype(float)
    # 65 of 256 samples, then 253 levels (half a level is 0.2 % of the scale)
    assert np.abs(ours - mpl_scale(name, t)).max() <= 3.0
    if name != "greys_sym":
        exact = colormaps[_MPL_NAME.get(name, name)](np.arange(256) / 255)[:, :3] * 255
        assert np.abs(to_rgb(np.arange(256) / 255, name, 0, 1) - exact).max() <= 3.0
    # the colour bar's samples are the table's ends and middle
    bar = hex_colors(name)
    assert bar[0] == "#{:02x}{:02x}{:02x}".format(*palette(name)[0])
    assert bar[-1] == "#{:02x}{:02x}{:02x}".format(*palette(name)[-1])


def test_to_rgb_clips_and_checks():
    lo, hi = to_rgb([-5.0, 5.0], "viridis", 0.0, 1.0)
    assert tuple(lo) == (0x44, 0x01, 0x54) and tuple(hi) == (0xFD, 0xE7, 0x25)
    with pytest.raises(ValueError, match="colormap must be one of"):
        to_rgb([0.5], "jet", 0.0, 1.0)
    with pytest.raises(ValueError, match="low < high"):
        to_rgb([0.5], "viridis", 1.0, 1.0)
    assert MASK_RGB not in {tuple(c) for c in palette("viridis").tolist()}


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e3))
def test_levels_are_the_nearest_level(value, high):
    level = int(levels(np.array([value]), -high, high)[0])
    exact = (np.clip(value, -high, high) + high) / (2 * high) * (LEVELS - 1)
    assert abs(level - exact) <= 0.5 + 1e-3


@given(st.floats(1e-308, 1e-30))
def test_levels_of_a_scale_too_narrow_for_float32_are_exact(high):
    """Scores soft-capped to a tiny cap: the scale still maps its ends to the end levels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in a float32 cast
        got = levels(np.array([-high, 0.0, high]), -high, high)
    assert got[0] == 0 and got[2] == LEVELS - 1 and abs(int(got[1]) - (LEVELS - 1) / 2) <= 0.5


def test_levels_of_a_scale_beyond_float32():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = levels(np.array([-1e60, 0.0, 1e60, 3e60]), -1e60, 1e60)
    assert got[0] == 0 and got[2] == got[3] == LEVELS - 1
    assert abs(int(got[1]) - (LEVELS - 1) / 2) <= 0.5


def test_levels_of_values_beyond_float32_on_a_float32_scale():
    """Weights of 1e200 (your own, not a softmax's) on the scale 0..1: the end's level."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = levels(np.array([1e200, -1e200, 0.5, 1e39]), 0.0, 1.0)
    assert got.tolist() == [LEVELS - 1, 0, (LEVELS - 1) // 2, LEVELS - 1]


@given(st.floats(1e-9, 1e9))
def test_symmetric_limit_is_the_next_readable_number(peak):
    limit = symmetric_limit(peak)
    mantissa = limit / 10 ** np.floor(np.log10(limit) + 1e-9)
    assert any(np.isclose(mantissa, m) for m in (1, 1.5, 2, 3, 4, 5, 6, 8))
    assert peak * (1 - 1e-9) <= limit <= 1.5 * peak * (1 + 1e-9)


def test_symmetric_limit_of_nothing_is_one():
    assert symmetric_limit(0.0) == symmetric_limit(np.inf) == symmetric_limit(np.nan) == 1.0


def test_png_encoders_decode_with_pillow():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 13, 3), dtype=np.uint8)
    img = Image.open(io.BytesIO(rgb_png(rgb)))
    assert img.size == (13, 7) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), rgb)
    indices = rng.integers(0, 5, size=(4, 9), dtype=np.uint8)
    colors = rng.integers(0, 256, size=(5, 3), dtype=np.uint8)
    img = Image.open(io.BytesIO(palette_png(indices, colors, transparent=(4,))))
    assert img.mode == "P" and np.array_equal(np.asarray(img), indices)
    assert np.array_equal(np.asarray(img.convert("RGB")), colors[indices])
    assert np.array_equal(np.asarray(img.convert("RGBA"))[..., 3], (indices != 4) * 255)
    with pytest.raises(ValueError, match="rgb must have shape"):
        rgb_png(np.zeros((0, 3, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# the same value, the same RGB: on screen and in SVG, PNG, PDF and HTML
# --------------------------------------------------------------------------------------------
WORDS = ["the", "cat", "sat", "on", "a", "mat", "because", "it", "was", "tired", "猫", "."]
FIGURE_OF_SECTION = ("x", "qkv", "scores", "weights", "outputs", "concat")  # the widget's


def _random_widget(colormap: str, seed: int) -> AttentionWidget:
    rng = np.random.default_rng(seed)
    text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 12))))
    n_heads = int(rng.choice([2, 4]))
    mask = ("causal", "none", "sliding", "causal")[seed % 4]  # masked cells in three cases
    return Detailed(text, d_model=int(rng.choice([16, 32])), n_heads=n_heads,
                           n_kv_heads=int(rng.choice([1, n_heads])), mask=mask, window=3,
                           temperature=float(rng.uniform(0.3, 3.0)), seed=seed,
                           colormap=colormap)


def _panel_values(trace, name: str, head: str) -> np.ndarray:
    arr = getattr(trace, stage(name).attr)
    return arr if arr.ndim == 2 else arr[int(head)]


def _screen_rgb(w: AttentionWidget, name: str, values: np.ndarray) -> np.ndarray:
    """The RGB of ``values``' cells in the PNG the widget's figure of their step sends."""
    section = next(i for i, s in enumerate(SECTIONS) if name in s.stages)
    fig = w.figs[FIGURE_OF_SECTION[section]]
    image = np.asarray(Image.open(io.BytesIO(fig.png)).convert("RGB"))
    rows, cols = values.shape
    shown = np.float32(values)
    for arr, (x0, y0) in zip(fig.displayed(), fig.panel_offsets(), strict=True):
        for c in range(arr.shape[1] - cols + 1):  # Q, K, V show every head side by side
            if arr.shape[0] == rows and np.array_equal(arr[:, c:c + cols], shown):
                x, y = int(x0) + c, int(y0)
                return image[y:y + rows, x:x + cols]
    raise AssertionError(f"the widget does not show {name} {values.shape}")


def _svg_heats(root: ET.Element) -> list[dict]:
    """Every heatmap of an SVG diagram, in drawing order: its panel, box, colours and mask."""
    heats = []
    for group in root.iter(f"{SVG}g"):
        cls = group.get("class")
        if cls == "aw-panel":
            panel = (group.get("data-stage"), group.get("data-head"))
        if cls not in ("aw-cells", "aw-bar", "aw-bar-mask"):
            continue
        rows, cols = int(group.get("data-rows")), int(group.get("data-cols"))
        items = list(group)
        if items[0].tag == f"{SVG}image":
            (image,) = items
            x, y = float(image.get("x")), float(image.get("y"))
            cw, ch = float(image.get("width")) / cols, float(image.get("height")) / rows
            pixels = Image.open(io.BytesIO(base64.b64decode(image.get("href").split(",")[1])))
            block = np.asarray(pixels).reshape(rows, round(ch), cols, round(cw), 3)
            grey = (block == MASK_RGB).all(-1) | (block == MASK_HATCH_RGB).all(-1)
            masked = (grey.all(axis=(1, 3)) & (block == MASK_RGB).all(-1).any(axis=(1, 3))
                      & (block == MASK_HATCH_RGB).all(-1).any(axis=(1, 3)))
            rgb = np.where(masked[..., None], MASK_RGB, block[:, 0, :, 0])  # hatch: grey
            flat = (block == block[:, :1, :, :1]).all(axis=(1, 3, 4))
            assert flat[~masked].all()  # one colour per cell
        else:
            x, y = float(items[0].get("x")), float(items[0].get("y"))
            cw, ch = float(items[0].get("width")), float(items[0].get("height"))
            masked = np.array([r.get("class") == "aw-masked" for r in items]).reshape(rows, cols)
            fills = [r.get("fill") for r in items]
            rgb = np.array([MASK_RGB if f.startswith("url(") else
                            [int(f[i:i + 2], 16) for i in (1, 3, 5)] for f in fills])
            rgb = rgb.reshape(rows, cols, 3)
        heats.append({"panel": panel if cls == "aw-cells" else None, "box": (x, y, cw, ch),
                      "rgb": rgb.astype(np.uint8), "masked": masked})
    return heats


def _hatch_pattern_is_mask_grey(root: ET.Element) -> None:
    for pattern in root.iter(f"{SVG}pattern"):
        assert pattern.find(f"{SVG}rect").get("fill") == "#{:02x}{:02x}{:02x}".format(*MASK_RGB)


def _png_file_rgb(png: np.ndarray, heat: dict, scale: float) -> np.ndarray:
    """The colour at the centre of each cell of ``heat`` in a PNG of ``scale`` px per px."""
    x, y, cw, ch = heat["box"]
    rows, cols = heat["masked"].shape
    cy = ((y + (np.arange(rows) + 0.5) * ch) * scale).astype(int)
    cx = ((x + (np.arange(cols) + 0.5) * cw) * scale).astype(int)
    return png[cy[:, None], cx[None, :]]


def _pdf_images(pdf: bytes) -> list[np.ndarray]:
    """The RGB images of an uncompressed PDF, in the order matplotlib drew them.

    matplotlib stores the image of a y-down axes bottom row first: flipped back here.
    """
    out = []
    for m in re.finditer(rb"/Subtype /Image /Width (\d+) /Height (\d+)\s*/ColorSpace "
                         rb"/DeviceRGB[^>]*>>\s*stream\r?\n", pdf):
        width, height = int(m.group(1)), int(m.group(2))
        data = pdf[m.end():m.end() + width * height * 3]
        out.append(np.frombuffer(data, np.uint8).reshape(height, width, 3)[::-1])
    return out


def _exports(w: AttentionWidget, colormap: str, tmp_path) -> dict[str, list[dict]]:
    """The heatmaps of the widget's trace in each format, with their RGB per cell."""
    trace, tokens = w.trace, w.tokens
    root = ET.fromstring(diagram_svg(trace, tokens, colormap=colormap, max_rects=10**6))
    _hatch_pattern_is_mask_grey(root)
    svg = _svg_heats(root)
    png = save_figure(trace, tmp_path / "d.png", tokens, colormap=colormap, dpi=192)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    png_heats = [dict(h, rgb=_png_file_rgb(pixels, h, 2.0)) for h in svg]
    with matplotlib.rc_context({"pdf.compression": 0}):
        pdf = save_figure(trace, tmp_path / "d.pdf", tokens, colormap=colormap).read_bytes()
    images = _pdf_images(pdf)
    assert [i.shape[:2] for i in images] == [h["masked"].shape for h in svg]
    pdf_heats = [dict(h, rgb=image) for h, image in zip(svg, images, strict=True)]
    page = to_html(trace, tmp_path / "d.html", tokens, colormap=colormap).read_text("utf-8")
    section = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    html_root = ET.fromstring(section)
    _hatch_pattern_is_mask_grey(html_root)
    return {"svg": svg, "png": png_heats, "pdf": pdf_heats, "html": _svg_heats(html_root)}


@pytest.fixture(scope="module", params=SEQUENTIAL)
def case(request, tmp_path_factory):
    """A random widget for each table (its diverging table paired) and its exports."""
    colormap = request.param
    w = _random_widget(colormap, seed=SEQUENTIAL.index(colormap))
    return w, colormap, _exports(w, colormap, tmp_path_factory.mktemp(colormap))


def _compared(case):
    """``(format, stage, values, colours, masked)`` for every panel of every export."""
    w, _, exports = case
    n_panels = sum(h["panel"] is not None for h in exports["svg"])
    for fmt, heats in exports.items():
        panels = [h for h in heats if h["panel"] is not None]
        assert len(panels) == n_panels, fmt
        for heat in panels:
            name, head = heat["panel"]
            values = _panel_values(w.trace, name, head)
            assert heat["masked"].shape == values.shape, (fmt, name)
            yield fmt, name, values, heat["rgb"], heat["masked"]


def test_every_export_colours_a_value_on_the_scale_of_its_step(case):
    w, colormap, _ = case
    trace = w.trace
    for fmt, name, values, rgb, masked in _compared(case):
        if name == "weights":
            table, low, high = colormap, 0.0, 1.0
        else:  # symmetric around 0, over every array of the step and every head
            (section,) = [s for s in SECTIONS if name in s.stages]
            peak = max(np.abs(getattr(trace, stage(s).attr)).max() for s in section.stages
                       if stage(s).present(trace))
            table, high = PAIRED_DIVERGING[colormap], symmetric_limit(peak)
            low = -high
        expected = to_rgb(values, table, low, high)
        np.testing.assert_array_equal(rgb[~masked], expected[~masked], err_msg=f"{fmt} {name}")
        if fmt == "png":  # a cell's centre may fall on a hatch line
            grey = (rgb == MASK_RGB).all(-1) | (rgb == MASK_HATCH_RGB).all(-1)
            assert grey[masked].all(), (fmt, name)
        else:
            assert (rgb[masked] == MASK_RGB).all(), (fmt, name)


def test_same_value_same_rgb_on_screen_and_in_every_export(case):
    w, _, _ = case
    for fmt, name, values, rgb, masked in _compared(case):
        screen = _screen_rgb(w, name, values)
        np.testing.assert_array_equal(rgb[~masked], screen[~masked], err_msg=f"{fmt} {name}")
        if name == "weights":  # the screen greys the same cells
            assert (screen[masked] == MASK_RGB).all(), fmt


# --------------------------------------------------------------------------------------------
# the scale rule chosen on screen, shared by every export
# --------------------------------------------------------------------------------------------
def test_scale_limits_by_hand():
    a = np.array([[1.0, -2.0], [0.5, 0.0]])
    b = np.array([[10.0, -0.2]])
    shared = scale_limits([a, b], "shared", signed=True)
    assert [(x.low, x.high, x.clipped) for x in shared] == [(-10.0, 10.0, False)] * 2
    per = scale_limits([a, b], "per head", signed=True)
    assert [(x.low, x.high) for x in per] == [(-2.0, 2.0), (-10.0, 10.0)]
    many = [np.full((10, 10), 1.0), np.full((1, 1), 50.0)]  # one value in 101 is an outlier
    robust = scale_limits(many, "robust", signed=True)
    end = float(np.percentile(np.abs(np.concatenate([m.ravel() for m in many])), 99))
    assert [(x.high, x.clipped, x.mode) for x in robust] == [(end, False, "robust"),
                                                              (end, True, "robust")]
    assert end < 50.0
    flat = scale_limits([np.ones((4, 4))], "robust", signed=True)  # nothing beyond: shared
    assert (flat[0].high, flat[0].clipped) == (1.0, False)
    w = np.array([[0.05, 0.07], [0.02, 0.9]])  # a diffuse row: its end 0.08, read as 1.5..8
    (fixed,) = scale_limits([w], "fixed", signed=False)
    (diffuse,) = scale_limits([w[:1]], "per head", signed=False)
    assert (fixed.low, fixed.high, diffuse.low, diffuse.high) == (0.0, 1.0, 0.0, 0.08)
    with pytest.raises(ValueError, match="scale must be one of"):
        scale_limits([a], "robust", signed=False)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from(SCALE_MODES))
def test_every_value_inside_its_scale_or_marked_clipped(values, mode):
    arr = np.array(values, dtype=np.float32)[None, :]
    (lim,) = scale_limits([arr], mode, signed=True)
    assert lim.low == -lim.high and lim.high > 0
    assert lim.clipped == bool((np.abs(arr) > lim.high).any())


@pytest.mark.parametrize("scales", [
    {"x": "robust", "qkv": "per head", "scores": "per head", "weights": "per head",
     "outputs": "robust", "concat": "per head"},
    {"x": "per head", "qkv": "robust", "scores": "robust", "outputs": "per head",
     "concat": "robust"},
])
def test_exports_follow_the_scales_chosen_on_screen(scales, tmp_path):
    w = _random_widget("cividis", seed=5)
    w.scales = scales
    root = ET.parse(w.save_figure(tmp_path / "s.svg")).getroot()
    panels = [h for h in _svg_heats(root) if h["panel"] is not None]
    assert len(panels) > 9
    for heat in panels:
        name, head = heat["panel"]
        values = _panel_values(w.trace, name, head)
        screen = _screen_rgb(w, name, values)
        ok = ~heat["masked"]
        np.testing.assert_array_equal(heat["rgb"][ok], screen[ok], err_msg=f"{name} {head}")
