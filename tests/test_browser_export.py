"""The widget's download control in a real browser: the file arrives and is a valid image."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.browser import write_notebook

pytestmark = pytest.mark.browser

CELL = """\
from attention_widget import AttentionWidget
w = AttentionWidget("The cat <b>sat</b> on the mat.", d_model=32, n_heads=4, mask="causal")
w
"""


def test_download_svg_and_png(jupyter_server, page_and_log, tmp_path: Path) -> None:
    write_notebook(tmp_path / "export.ipynb", [CELL])
    voila = jupyter_server("voila", tmp_path)
    page, log = page_and_log
    page.goto(voila.notebook_url("export.ipynb"), timeout=60000)
    widget = page.locator(".attention-widget").first
    widget.wait_for(timeout=60000)
    files = {}
    for fmt in ("svg", "png"):
        widget.locator(".aw-export-format button", has_text=fmt).click()
        widget.locator(".aw-export-button").click()
        link = widget.locator(f"a.aw-download-{fmt}")
        link.wait_for(timeout=30000)
        with page.expect_download(timeout=30000) as info:
            link.click()
        download = info.value
        assert download.suggested_filename == f"attention-all.{fmt}"
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        files[fmt] = target.read_bytes()
    root = ET.fromstring(files["svg"])
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"cat", "sat", "<", "b"} <= texts  # the tokens, as text
    png = files["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 200 and height > 200
    assert log.real_errors() == [], log.real_errors()
    assert log.dialogs == []
