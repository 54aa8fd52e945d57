"""The widget's export and state methods: files valid, round trips exact, bad files rejected."""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from support.comm import by_class

from attention_widget import AttentionWidget, init_params

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def w():
    w = AttentionWidget("The cat <script>x</script> sat.", d_model=32, n_heads=4, n_kv_heads=2,
                        mask="causal", temperature=0.7)
    w.query = 2
    return w


def test_save_figure_svg_png_pdf(w, tmp_path):
    svg = w.save_figure(tmp_path / "d.svg")
    root = ET.parse(svg).getroot()
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"cat", "script", "<", "sat"} <= texts  # tokens as text, '<' escaped by the XML
    assert "<script" not in svg.read_text()
    png = w.save_figure(tmp_path / "d.png", stages=["weights"], heads=[1]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100
    pdf = w.save_figure(tmp_path / "d.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    with pytest.raises(ValueError, match="stage"):
        w.save_figure(tmp_path / "d.svg", stages=["nope"])
    with pytest.raises(ValueError, match="head"):
        w.save_figure(tmp_path / "d.svg", heads=[9])


def test_download_control_builds_valid_links(w):
    (what_control,), (format_control,), (button,), (link_html,) = (
        by_class(w, f"aw-export-{part}") for part in ("what", "format", "button", "link"))
    for what in ("all", "weights", "focus"):
        for fmt in ("svg", "png"):
            what_control.value, format_control.value = what, fmt
            button.click()
            link = link_html.value
            assert f'download="attention-{what}.{fmt}"' in link
            data = base64.b64decode(link.split("base64,", 1)[1].split('"', 1)[0])
            if fmt == "png":
                assert data[:8] == b"\x89PNG\r\n\x1a\n"
            else:
                ET.fromstring(data)  # parses as XML
                assert b"<script" not in data


def test_to_html_has_variants(w, tmp_path):
    page = w.to_html(tmp_path / "p.html").read_text()
    assert "<html" in page.lower() and "temperature 0.25" in page and "2 heads" in page
    assert "<script>x</script>" not in page  # token text never becomes markup


def test_state_round_trip_text_and_arrays(w, tmp_path):
    w.save_state(tmp_path / "s.npz")
    w2 = AttentionWidget.load_state(tmp_path / "s.npz")
    assert w2.summary == w.summary and w2.query == w.query and w2.tokens == w.tokens
    for name in ("x", "q", "k", "v", "scores", "weights", "head_outputs", "output", "entropy"):
        np.testing.assert_array_equal(getattr(w2.trace, name), getattr(w.trace, name))
    x = np.random.default_rng(2).standard_normal((4, 12))
    a = AttentionWidget.from_arrays(x, init_params(12, 3, seed=4, bias=True), ["a", "b", "c", "d"],
                                    n_heads=3)
    a.save_state(tmp_path / "a.npz")
    a2 = AttentionWidget.load_state(tmp_path / "a.npz")
    np.testing.assert_array_equal(a2.trace.output, a.trace.output)
    assert a2.controls["text"].layout.display == "none"  # fixed by the arrays: not drawn


def test_state_reproduces_the_view_scales_and_designed_weights(tmp_path):
    w = AttentionWidget("the cat saw the dog and the cat ran", d_model=32, n_heads=4,
                        weights="designed", view="detailed", projector=True,
                        scales={"scores": "robust", "weights": "per head", "x": "per head"})
    w.head, w.query = 2, 3
    w2 = AttentionWidget.load_state(w.save_state(tmp_path / "d.npz"))
    for name in ("weights", "view", "projector", "scales", "head", "query", "colormap"):
        assert getattr(w2, name) == getattr(w, name), name
    np.testing.assert_array_equal(w2.trace.weights, w.trace.weights)
    assert w2.head_titles == w.head_titles and w2.head_titles[0] == "head 0 · previous token"


def test_exports_follow_the_scales_on_screen(tmp_path):
    w = AttentionWidget("The cat sat on the mat.", d_model=32, n_heads=4, view="detailed",
                        scales={"scores": "robust", "outputs": "per head"})
    root = ET.parse(w.save_figure(tmp_path / "r.svg")).getroot()
    modes = [g.get("data-mode") for g in root.iter() if g.get("data-mode")]
    assert modes == ["shared", "shared", "shared", "shared", "robust", "fixed", "per head",
                     "shared", "shared"], modes
    robust = next(g for g in root.iter() if g.get("data-mode") == "robust")
    limits = w.figs["scores"].limits()  # the screen's scale of the scores, same rule
    assert float(robust.get("data-vmax")) == pytest.approx(limits[0].high, rel=1e-6)


def test_state_file_edited_or_truncated_is_rejected(w, tmp_path):
    path = w.save_state(tmp_path / "s.npz")
    data = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.npz"):
        AttentionWidget.load_state(tmp_path / "t.npz")
    # a consistent file whose stored trace does not match what its settings recompute
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if "weights" in k)
    arrays[key] = arrays[key] * 0.5
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(ValueError, match=r"e\.npz"):
        AttentionWidget.load_state(tmp_path / "e.npz")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_arrays_beyond_float32_keep_their_scale_on_screen_and_in_exports(tmp_path):
    """Your own x of 1e20 gives scores of about 1e40, beyond float32: both views and the SVG
    draw them on the scale of their true peak (not on -1 .. 1 from infinities), warning-free."""
    params = init_params(16, 2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 16)) * 1e20
    w = AttentionWidget.from_arrays(x, params, n_heads=2, view="detailed")
    peak = float(np.abs(w.trace.scores).max())
    assert peak > 1e39  # beyond float32's 3.4e38
    detailed = w.figs["scores"].limits()[0]
    assert peak <= detailed.high <= 10 * peak and detailed.low == -detailed.high
    assert max(np.abs(a).max() for a in w.displayed("scores")) == pytest.approx(peak, rel=1e-12)
    root = ET.parse(w.save_figure(tmp_path / "big.svg")).getroot()
    vmax = [float(g.get("data-vmax")) for g in root.iter() if g.get("data-vmax")]
    assert detailed.high in vmax  # the scores' scale, as on screen
    assert all(np.isfinite(vmax)), vmax


@pytest.mark.parametrize("method, name, what", [
    ("save_figure", "d.svg", "the figure"), ("save_figure", "d.png", "the figure"),
    ("to_html", "d.html", "the page"), ("save_state", "s.npz", "the state"),
])
def test_a_missing_folder_is_named_before_anything_is_drawn(w, tmp_path, method, name, what):
    path = tmp_path / "missing" / name
    with pytest.raises(FileNotFoundError, match=rf"cannot save {what} to .*: no folder "
                                                rf"'.*missing'"):
        getattr(w, method)(path)
    assert not path.parent.exists()
