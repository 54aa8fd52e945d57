"""Export: SVG/PNG/PDF files are valid and show what they claim; HTML works offline."""

from __future__ import annotations

import base64
import io
import re
import struct
import sys
import warnings
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_colors import mpl_scale as _mpl  # matplotlib's colormaps, the reference

from attention_widget import embed, init_params, multi_head_attention
from attention_widget.colors import MASK_HATCH_RGB, MASK_RGB, to_rgb
from attention_widget.export import (
    STAGES,
    diagram_data_url,
    diagram_png_bytes,
    diagram_svg,
    download_link,
    fonts,
    save_figure,
    to_html,
)
from attention_widget.stages import STAGE_NAMES

SVG = "{http://www.w3.org/2000/svg}"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
TOKENS = ["The", "cat", XSS_SCRIPT, "sat", XSS_IMG, "on", "the", "mat", "&amp;", "猫", "."]


def _trace(tokens=TOKENS, d_model=32, n_heads=4, n_kv_heads=None, **kw):
    x = embed(tokens, d_model, seed=1)
    params = init_params(d_model, n_heads, n_kv_heads, seed=1)
    return multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads, **kw)


@pytest.fixture(scope="module")
def causal():
    return _trace(mask="causal")


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _panels(root, stage):
    return [
        g
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "aw-panel" and g.get("data-stage") == stage
    ]


def _cells(panel):
    (cells,) = [g for g in panel.iter(f"{SVG}g") if g.get("class") == "aw-cells"]
    return cells


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def _bars(root):
    """The colour bar of each stage."""
    return {
        g.get("data-stage"): next(b for b in g if b.get("class") == "aw-colorbar")
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "aw-stage"
    }


def _is_nice_limit(limit: float, peak: float) -> bool:
    """``limit`` is the smallest of 1, 1.5, 2, 3, 4, 5, 6, 8 x 10^k at or above ``peak``."""
    nice = sorted(m * 10.0**k for k in range(-4, 5) for m in (1, 1.5, 2, 3, 4, 5, 6, 8))
    return limit == pytest.approx(next(v for v in nice if v >= peak * (1 - 1e-12)))


def test_stages_are_the_one_list():
    assert STAGES == STAGE_NAMES


# --------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------
def test_svg_parses_and_has_tokens_as_text(causal):
    svg = diagram_svg(causal, TOKENS)
    root = _parse(svg)
    texts = [t for t in root.iter(f"{SVG}text") if t.get("class") == "aw-token"]
    shown = {t.text for t in texts}
    for token in ("The", "cat", "sat", "on", "the", "mat", "&amp;", "猫", "."):
        assert token in shown, token
    # long tokens are shortened in the label, with the full text as a tooltip
    full = {"".join(t.itertext()) for t in texts}
    assert any(XSS_SCRIPT in f for f in full)
    assert any(XSS_IMG in f for f in full)
    stages = [g.get("data-stage") for g in root.iter(f"{SVG}g") if g.get("class") == "aw-stage"]
    assert stages == [s for s in STAGES if s != "latent"]  # (latent attention's only)


def test_svg_token_markup_stays_text(causal):
    svg = diagram_svg(causal, TOKENS, tooltips=True, title=XSS_SCRIPT)
    root = _parse(svg)
    tags = {el.tag for el in root.iter()}
    assert not any("script" in tag or tag.endswith("img") for tag in tags)
    assert "<script" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg
    (title,) = [t for t in root.iter(f"{SVG}text") if t.get("class") == "aw-title"]
    assert title.text == XSS_SCRIPT


def test_stage_and_head_selection(causal):
    root = _parse(diagram_svg(causal, TOKENS, stages=["weights", "x"], heads=[1, 3]))
    stages = [g.get("data-stage") for g in root.iter(f"{SVG}g") if g.get("class") == "aw-stage"]
    assert stages == ["x", "weights"]  # computation order
    assert [p.get("data-head") for p in _panels(root, "weights")] == ["1", "3"]
    assert _panels(root, "scores") == []
    one = _parse(diagram_svg(causal, TOKENS, stages="weights", heads=2))
    assert [p.get("data-head") for p in _panels(one, "weights")] == ["2"]
    # grouped-query attention: K and V show the key/value heads the chosen heads read
    gqa = _trace(n_heads=4, n_kv_heads=2)
    root = _parse(diagram_svg(gqa, TOKENS, stages=["k", "v"], heads=[2, 3]))
    assert [p.get("data-head") for p in _panels(root, "k")] == ["1"]
    root = _parse(diagram_svg(gqa, TOKENS, stages=["k"], heads=[0, 2]))
    assert [p.get("data-head") for p in _panels(root, "k")] == ["0", "1"]


def test_weights_on_fixed_scale_match_matplotlib_viridis():
    # a flat trace (high temperature): max weight well below 1 must NOT get the top colour
    flat = _trace(temperature=20.0)
    assert flat.weights.max() < 0.3
    root = _parse(diagram_svg(flat, TOKENS, stages="weights"))
    for panel in _panels(root, "weights"):
        h = int(panel.get("data-head"))
        fills = np.array([_hex(r.get("fill")) for r in _cells(panel)])
        expected = _mpl("viridis", flat.weights[h].reshape(-1))
        assert np.abs(fills - expected).max() <= 3.0
    (bar,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "aw-colorbar"]
    assert float(bar.get("data-vmin")) == 0.0 and float(bar.get("data-vmax")) == 1.0
    # cividis is honoured too
    root = _parse(diagram_svg(flat, TOKENS, stages="weights", heads=0, colormap="cividis"))
    fills = np.array([_hex(r.get("fill")) for r in _cells(_panels(root, "weights")[0])])
    assert np.abs(fills - _mpl("cividis", flat.weights[0].reshape(-1))).max() <= 3.0


def test_signed_stages_use_a_symmetric_diverging_scale_shared_by_their_step():
    trace = _trace()
    root = _parse(diagram_svg(trace, TOKENS, stages=["q", "v", "output"], heads=[1]))
    bars = _bars(root)
    qkv = (trace.q, trace.k, trace.v)
    for stage, shown, step in (
        ("q", trace.q[1:2], qkv),
        ("v", trace.v[1:2], qkv),
        ("output", trace.output[None], (trace.concat, trace.output)),
    ):
        # one scale per step of the computation (as the widget's figures), over every head
        peak = max(np.abs(a).max() for a in step)
        bar = bars[stage]
        m = float(bar.get("data-vmax"))
        assert _is_nice_limit(m, peak)
        assert float(bar.get("data-vmin")) == -m
        assert bar.get("data-colormap") == "RdBu_r"
        for panel, values in zip(_panels(root, stage), shown, strict=True):
            fills = np.array([_hex(r.get("fill")) for r in _cells(panel)])
            expected = _mpl("RdBu_r", (values.reshape(-1) + m) / (2 * m))
            assert np.abs(fills - expected).max() <= 3.0
    assert bars["q"].get("data-vmax") == bars["v"].get("data-vmax")
    lut = to_rgb(np.linspace(-1, 1, 65), "RdBu_r", -1, 1).astype(int)
    assert np.abs(lut[32] - np.array([0xF7, 0xF6, 0xF6])).max() <= 1  # 0 is the neutral centre


@pytest.mark.parametrize(
    ("colormap", "diverging"),
    [("viridis", "RdBu_r"), ("cividis", "PuOr_r"), ("magma", "RdBu_r"), ("greys", "greys_sym")],
)
def test_signed_scale_is_paired_with_the_colormap_like_the_widget(causal, colormap, diverging):
    root = _parse(diagram_svg(causal, TOKENS, stages=["x", "weights"], colormap=colormap))
    bars = [g for g in root.iter(f"{SVG}g") if g.get("class") == "aw-colorbar"]
    assert [b.get("data-colormap") for b in bars] == [diverging, colormap]
    m = float(bars[0].get("data-vmax"))
    assert _is_nice_limit(m, np.abs(causal.x).max())
    fills = np.array([_hex(r.get("fill")) for r in _cells(_panels(root, "x")[0])])
    assert np.abs(fills - _mpl(diverging, (causal.x.reshape(-1) + m) / (2 * m))).max() <= 3.0
    root = _parse(diagram_svg(causal, TOKENS, stages="x", diverging="PuOr_r"))
    bars = [g for g in root.iter(f"{SVG}g") if g.get("class") == "aw-colorbar"]
    assert bars[0].get("data-colormap") == "PuOr_r"


def test_masked_cells_are_hatched_not_zero(causal):
    n = causal.seq_len
    root = _parse(diagram_svg(causal, TOKENS, stages=["scores", "weights"]))
    pattern = root.find(f"{SVG}defs/{SVG}pattern")
    hatch = pattern.get("id")
    # the hatch: MASK_RGB grey crossed by MASK_HATCH_RGB lines
    assert _hex(pattern.find(f"{SVG}rect").get("fill")).tolist() == list(MASK_RGB)
    assert _hex(pattern.find(f"{SVG}path").get("stroke")).tolist() == list(MASK_HATCH_RGB)
    for stage in ("scores", "weights"):
        for panel in _panels(root, stage):
            rects = list(_cells(panel))
            assert len(rects) == n * n
            masked = np.array([r.get("class") == "aw-masked" for r in rects]).reshape(n, n)
            assert np.array_equal(masked, ~np.tri(n, dtype=bool))  # exactly the future keys
            for r in rects:
                if r.get("class") == "aw-masked":
                    assert r.get("fill") == f"url(#{hatch})"
                else:
                    assert r.get("fill").startswith("#")
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "aw-bar-mask"]
    assert len(legend) == 2  # a "masked" swatch beside both colour bars
    # without a mask nothing is hatched
    plain = _parse(diagram_svg(_trace(), TOKENS, stages="weights"))
    assert not [r for r in plain.iter(f"{SVG}rect") if r.get("class") == "aw-masked"]


def test_large_panels_become_embedded_png_with_hatched_mask():
    tokens = [f"w{i}" for i in range(60)]
    trace = _trace(tokens, d_model=16, n_heads=2, mask="sliding", window=4)
    root = _parse(diagram_svg(trace, tokens, stages="weights", max_rects=1000))
    panels = _panels(root, "weights")
    assert len(panels) == 2
    for panel in panels:
        cells = _cells(panel)
        (image,) = list(cells)
        assert image.tag == f"{SVG}image"
        url = image.get("href")
        assert url.startswith("data:image/png;base64,")
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        ch = img.shape[0] // 60
        cw = img.shape[1] // 60
        assert img.shape[:2] == (60 * ch, 60 * cw)
        centres = img[ch // 2 :: ch, cw // 2 :: cw].reshape(60, 60, 3)
        masked = ~trace.mask
        block = img.reshape(60, ch, 60, cw, 3)
        hatch = (block == MASK_RGB).all(axis=-1) | (block == MASK_HATCH_RGB).all(axis=-1)
        assert np.array_equal(hatch.all(axis=(1, 3)), masked)  # only the hatch's colours
        grey = (block == MASK_RGB).all(axis=-1).mean(axis=(1, 3))
        assert (grey[masked] >= 0.5).all()  # mostly grey, crossed by lines
        h = int(panel.get("data-head"))
        expected = _mpl("viridis", trace.weights[h])[~masked]
        assert np.abs(centres[~masked].astype(float) - expected).max() <= 3.0
    # token labels are thinned but stay text
    labels = {t.text for t in root.iter(f"{SVG}text") if t.get("class") == "aw-token"}
    assert "w0" in labels and len(labels) >= 15


def test_vector_stages_choose_rects_or_images(causal):
    root = _parse(diagram_svg(causal, TOKENS, stages=["x", "weights"], vector_stages="weights"))
    (x_panel,) = _panels(root, "x")
    assert [el.tag for el in _cells(x_panel)] == [f"{SVG}image"]
    for panel in _panels(root, "weights"):
        assert {el.tag for el in _cells(panel)} == {f"{SVG}rect"}
    img = Image.open(io.BytesIO(base64.b64decode(_cells(x_panel)[0].get("href").split(",")[1])))
    ch = img.size[1] // causal.seq_len
    cw = img.size[0] // causal.d_model
    centres = np.asarray(img)[ch // 2 :: ch, cw // 2 :: cw][: causal.seq_len, : causal.d_model]
    m = float(_bars(root)["x"].get("data-vmax"))
    assert _is_nice_limit(m, np.abs(causal.x).max())
    assert np.abs(centres - _mpl("RdBu_r", (causal.x + m) / (2 * m))).max() <= 3.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stages": ["weights", "attention"]}, "stages contains unknown stage 'attention'"),
        ({"stages": []}, "stages is empty"),
        ({"heads": [0, 4]}, "heads contains 4 but the trace has n_heads=4"),
        ({"heads": -1}, "heads contains -1"),
        ({"colormap": "jet"}, "colormap must be one of"),
        ({"diverging": "viridis"}, "diverging must be one of"),
        ({"tokens": ["a", "b"]}, "tokens has 2 entries but the trace has seq_len=11"),
    ],
)
def test_bad_arguments_name_the_argument(causal, kwargs, match):
    kwargs = dict(kwargs)
    tokens = kwargs.pop("tokens", TOKENS)
    with pytest.raises(ValueError, match=match):
        diagram_svg(causal, tokens, **kwargs)


def test_bad_types(causal):
    with pytest.raises(TypeError, match="trace must be an AttentionTrace"):
        diagram_svg(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="heads must hold integers"):
        diagram_svg(causal, heads=[0.5])
    with pytest.raises(TypeError, match="tokens must be a list of str"):
        diagram_svg(causal, tokens="The cat")


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=6))
def test_any_token_text_gives_well_formed_svg(tokens):
    trace = _trace(tokens, d_model=8, n_heads=2)
    root = _parse(diagram_svg(trace, tokens, tooltips=True))
    assert not [el for el in root.iter() if "script" in el.tag]


# --------------------------------------------------------------------------------------------
# files: SVG, PNG, PDF
# --------------------------------------------------------------------------------------------
def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", data[8:16])
    assert tag == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) & 0xFFFFFFFF == struct.unpack(">I", data[29:33])[0]
    return width, height


def test_save_svg_png_pdf(causal, tmp_path):
    svg_path = save_figure(causal, tmp_path / "fig.svg", TOKENS)
    root = _parse(svg_path.read_text(encoding="utf-8"))
    w_px, h_px = int(root.get("width")), int(root.get("height"))
    assert w_px > 0 and h_px > 0
    assert "cat" in {t.text for t in root.iter(f"{SVG}text")}

    png_path = save_figure(causal, tmp_path / "fig.png", TOKENS, dpi=96)
    width, height = _png_size(png_path.read_bytes())
    assert abs(width - w_px) <= 1 and abs(height - h_px) <= 1  # same layout, 1 px per px at 96
    img = np.asarray(Image.open(png_path).convert("RGB"))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # heatmaps, not a blank page

    pdf = save_figure(causal, tmp_path / "fig.pdf", TOKENS).read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType text, not glyph drawings

    # format= overrides the suffix; dpi scales the PNG
    other = save_figure(causal, tmp_path / "fig.dat", TOKENS, format="png", dpi=48, stages="x")
    width2, _ = _png_size(other.read_bytes())
    small = _parse(diagram_svg(causal, TOKENS, stages="x"))
    assert abs(width2 - int(small.get("width")) / 2) <= 1


def test_png_tokens_are_plain_text_not_mathtext():
    tokens = ["$", "$x^2$", "\\frac", "a_b", "$$"]
    trace = _trace(tokens, d_model=8, n_heads=2)
    png = diagram_png_bytes(trace, tokens, stages="weights", dpi=40)  # mathtext would raise
    assert _png_size(png)[0] > 0


def test_png_bytes_and_data_urls(causal):
    png = diagram_png_bytes(causal, TOKENS, stages="weights", heads=[0], dpi=50)
    assert _png_size(png)[0] > 0
    url = diagram_data_url(causal, TOKENS, format="svg", stages="weights")
    assert url.startswith("data:image/svg+xml;base64,")
    root = _parse(base64.b64decode(url.split(",", 1)[1]).decode("utf-8"))
    assert len(_panels(root, "weights")) == 4
    url = diagram_data_url(causal, TOKENS, format="png", stages="weights", dpi=40)
    assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="format"):
        diagram_data_url(causal, TOKENS, format="gif")


def test_download_link_is_an_escaped_anchor(causal):
    html_text = download_link(causal, TOKENS, stages="weights", filename='a"b.svg', label="<b>")
    root = ET.fromstring(html_text)
    assert root.tag == "a" and root.get("download") == 'a"b.svg' and root.text == "<b>"
    assert root.get("class") == "aw-download aw-download-svg"
    svg = base64.b64decode(root.get("href").split(",", 1)[1]).decode("utf-8")
    assert len(_panels(_parse(svg), "weights")) == causal.n_heads
    png = ET.fromstring(download_link(causal, TOKENS, format="png", stages="x", dpi=30))
    assert png.get("download") == "attention.png" and png.text == "Download PNG"
    with pytest.raises(ValueError, match="filename"):
        download_link(causal, TOKENS, filename="../x.svg")


def test_save_figure_bad_arguments(causal, tmp_path):
    with pytest.raises(ValueError, match=r"path .*fig\.jpg.* suffix"):
        save_figure(causal, tmp_path / "fig.jpg")
    with pytest.raises(ValueError, match="format must be"):
        save_figure(causal, tmp_path / "fig.png", format="tiff")
    with pytest.raises(ValueError, match="stages contains unknown stage"):
        save_figure(causal, tmp_path / "fig.png", stages=["nope"])
    with pytest.raises(ValueError, match="heads contains 9"):
        save_figure(causal, tmp_path / "fig.pdf", heads=[9])
    with pytest.raises(ValueError, match="dpi"):
        save_figure(causal, tmp_path / "fig.png", dpi=0)
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_svg_works_and_png_says_how_to_install(causal, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert save_figure(causal, tmp_path / "ok.svg", TOKENS).exists()
    with pytest.raises(ImportError, match=re.escape("pip install attention-widget[export]")):
        save_figure(causal, tmp_path / "no.png", TOKENS)


# --------------------------------------------------------------------------------------------
# fonts: Chinese, Japanese and Korean tokens in PNG and PDF
# --------------------------------------------------------------------------------------------
CJK = {"zh": "我的猫很可爱。", "ja": "日本語のテキスト", "ko": "한국어"}


def _label_crops(trace, tokens):
    """Each row label of the X panel as drawn in the PNG (96 dpi: one pixel per layout px)."""
    png = diagram_png_bytes(trace, tokens, stages="x", dpi=96)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    root = _parse(diagram_svg(trace, tokens, stages="x"))
    crops = []
    for text in root.iter(f"{SVG}text"):
        if text.get("class") == "aw-token":
            x, y, size = (float(text.get(k)) for k in ("x", "y", "font-size"))
            crops.append(pixels[int(y - size) : int(y + 3), int(x - 1.5 * size) : int(x)])
    return crops


@pytest.mark.parametrize("language", CJK)
def test_cjk_tokens_are_drawn_with_an_installed_font(language, tmp_path):
    tokens = list(CJK[language])
    trace = _trace(tokens, d_model=8, n_heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither ours nor matplotlib's "Glyph missing"
        crops = _label_crops(trace, tokens)
        pdf = save_figure(trace, tmp_path / "cjk.pdf", tokens, stages="weights").read_bytes()
    assert all(c.min() < 128 for c in crops)  # ink in every label
    # different characters, different glyphs (a missing glyph is the same empty box for all)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert not np.array_equal(crops[i], crops[j]), (tokens[i], tokens[j])
    fonts = set(re.findall(rb"/BaseFont /[A-Z]{6}\+([\w-]+)", pdf))
    assert fonts - {b"DejaVuSans", b"DejaVuSans-Bold"}  # a second font holds the glyphs
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType outlines preferred


def test_without_a_cjk_font_one_warning_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fonts, "FALLBACK_FAMILIES", ())  # the font search finds nothing
    tokens = list(CJK["zh"])
    trace = _trace(tokens, d_model=8, n_heads=2)
    with pytest.warns(UserWarning) as record:
        crops = _label_crops(trace, tokens)
    assert len(record) == 1, [str(r.message) for r in record]  # no per-glyph warnings
    message = str(record[0].message)
    assert "我的猫很可爱" in message and "apt-get install fonts-noto-cjk" in message
    assert record[0].filename == __file__  # points at the caller's line
    assert np.array_equal(crops[0], crops[1])  # the same empty box: what the warning says
    with pytest.warns(UserWarning, match="fonts-noto-cjk") as record:
        save_figure(trace, tmp_path / "boxes.pdf", tokens)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SVG leaves the font to the viewer: nothing to say
        save_figure(trace, tmp_path / "fine.svg", tokens)


def _cff_font(path, family: str, char: str) -> None:
    """A font with PostScript (CFF) outlines, like Noto Sans CJK: one square glyph for char."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.t2CharStringPen import T2CharStringPen

    glyph = f"uni{ord(char):04X}"
    charstrings = {}
    for name, box in ((".notdef", None), (glyph, (100, 0, 900, 800))):
        pen = T2CharStringPen(1000, None)
        if box:
            pen.moveTo(box[:2])
            pen.lineTo((box[2], box[1]))
            pen.lineTo(box[2:])
            pen.lineTo((box[0], box[3]))
            pen.closePath()
        charstrings[name] = pen.getCharString()
    builder = FontBuilder(1000, isTTF=False)
    builder.setupGlyphOrder([".notdef", glyph])
    builder.setupCharacterMap({ord(char): glyph})
    builder.setupCFF(family.replace(" ", ""), {"FullName": family}, charstrings, {})
    builder.setupHorizontalMetrics({".notdef": (1000, 0), glyph: (1000, 100)})
    builder.setupHorizontalHeader(ascent=880, descent=-120)
    builder.setupNameTable({"familyName": family, "styleName": "Regular",
                            "psName": family.replace(" ", "")})
    builder.setupOS2(sTypoAscender=880, usWinAscent=880, usWinDescent=120)
    builder.setupPost()
    builder.save(str(path))


def test_pdf_with_a_postscript_outline_font_embeds_type3_glyphs(monkeypatch, tmp_path):
    from matplotlib import font_manager

    family = "Attention Test CFF"
    _cff_font(tmp_path / "test-cff.otf", family, "猫")
    manager = font_manager.fontManager
    monkeypatch.setattr(manager, "ttflist", list(manager.ttflist))  # restored afterwards
    manager.addfont(tmp_path / "test-cff.otf")
    monkeypatch.setattr(fonts, "FALLBACK_FAMILIES", (family,))
    tokens = ["the", "猫"]
    trace = _trace(tokens, d_model=8, n_heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdf = save_figure(trace, tmp_path / "cff.pdf", tokens, stages="x").read_bytes()
    # matplotlib's TrueType embedding would write the CFF font as a broken FontFile2
    assert b"/Subtype /Type3" in pdf and b"AttentionTestCFF" in pdf
    assert b"/FontFile2" not in pdf


# --------------------------------------------------------------------------------------------
# standalone HTML, opened offline in headless Chromium
# --------------------------------------------------------------------------------------------
def test_html_escapes_everything(causal, tmp_path):
    path = to_html(
        causal,
        tmp_path / "page.html",
        TOKENS,
        title=XSS_SCRIPT,
        variants={"</script><script>alert(2)</script>": _trace(temperature=0.5)},
        settings={"text": XSS_IMG, "n_heads": 4},
    )
    page = path.read_text(encoding="utf-8")
    assert page.count("<script") == 2  # our JSON block and our code, nothing else
    assert "<img" not in page
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "").replace(
        '"http://www.w3.org/1999/xlink"', ""
    )
    assert "https://" not in page and "src=" not in page.replace("src=x", "")
    with pytest.raises(ValueError, match=r"\.html"):
        to_html(causal, tmp_path / "page.txt")
    with pytest.raises(ValueError, match=r"variants\['short'\]: tokens has 11 entries"):
        to_html(causal, tmp_path / "v.html", TOKENS, variants={"short": _trace(TOKENS[:5])})


def test_html_summary_names_the_mask(tmp_path):
    variants = {
        "sliding": _trace(mask="sliding", window=3),
        "causal": _trace(mask="causal"),
        "custom": _trace(mask=np.eye(11, dtype=bool) | np.eye(11, k=1, dtype=bool)),
    }
    page = to_html(_trace(), tmp_path / "m.html", TOKENS, variants=variants).read_text()
    for summary in ("mask=none", "mask=sliding, window=3", "mask=causal", "mask=custom"):
        assert summary in page


@pytest.mark.browser
def test_html_offline_in_chromium(causal, tmp_path):
    from playwright.sync_api import sync_playwright
    from support.browser import CHROMIUM, CHROMIUM_ARGS

    variants = {
        "T = 0.2": _trace(mask="causal", temperature=0.2),
        "2 heads": _trace(mask="causal", n_heads=2),
    }
    path = to_html(causal, tmp_path / "page.html", TOKENS, variants=variants, settings={"a": 1})
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()

            def route(r):
                requests.append(r.request.url)
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_selector("section.aw-variant:not([hidden]) g.aw-panel")

            def visible_weights():
                sel = "section.aw-variant:not([hidden]) g.aw-panel[data-stage=weights]"
                panels = page.locator(sel)
                boxes = [panels.nth(i).bounding_box() for i in range(panels.count())]
                assert all(b and b["width"] > 20 and b["height"] > 20 for b in boxes)
                fills = page.eval_on_selector_all(
                    sel + " g.aw-cells rect", "els => els.map(e => e.getAttribute('fill'))"
                )
                return len(boxes), fills

            n0, fills0 = visible_weights()
            assert n0 == causal.n_heads == 4
            assert page.locator("section.aw-variant:not([hidden])").count() == 1
            page.select_option("#aw-variant", "1")
            n1, fills1 = visible_weights()
            assert n1 == 4 and fills1 != fills0
            current = page.inner_text("#aw-current")
            assert "temperature=0.2" in current and "mask=causal" in current
            page.select_option("#aw-variant", "2")
            n2, _ = visible_weights()
            assert n2 == 2
            page.select_option("#aw-variant", "0")
            assert visible_weights()[1] == fills0
            # every stage is on the page, and the tokens are shown as text
            stages = page.eval_on_selector_all(
                "section.aw-variant:not([hidden]) g.aw-stage",
                "els => els.map(e => e.dataset.stage)",
            )
            assert stages == [s for s in STAGES if s != "latent"]  # (latent attention's only)
            assert page.locator("script").count() == 2 and page.locator("img").count() == 0
            labels = page.eval_on_selector_all(
                "text.aw-token", "els => els.map(e => e.textContent)"
            )
            assert any(XSS_SCRIPT in s for s in labels)
        finally:
            browser.close()
    assert problems == []
    assert requests and all(u.startswith("file://") for u in requests)
