"""A standalone HTML page of the diagram: offline, one file, several precomputed traces."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._checks import output_path
from ..engine import AttentionTrace
from ..long import LongTrace
from ..stages import summary
from .layout import check_head_selection, check_tokens, check_trace
from .long_layout import long_summary
from .svg import FONT, diagram_svg, escape

__all__ = ["to_html"]

_STYLE = f"""
body {{ font-family: {FONT}; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; }}
.aw-controls {{ margin: 0.8em 0; }}
.aw-controls select {{ font-size: 1em; }}
table.aw-settings {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }}
table.aw-settings td {{ border: 1px solid #ccc; padding: 2px 8px; }}
.aw-summary {{ font-family: monospace; }}
.aw-variant svg {{ max-width: none; }}
footer {{ color: #666; font-size: 0.8em; margin-top: 2em; }}
"""

_SCRIPT = """
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

_FOOTER = (
    "Weights: fixed scale 0..1; signed arrays: diverging scale symmetric around 0, one per "
    "step of the computation; grey hatched cells are masked. Made with attention_widget."
)


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


def _variants(trace: AttentionTrace, variants: object) -> list[tuple[str, AttentionTrace]]:
    items: list[tuple[str, AttentionTrace]] = [("current", trace)]
    if variants is None:
        return items
    if not isinstance(variants, Mapping):
        raise TypeError(
            f"variants must be a dict of label -> AttentionTrace, got {type(variants).__name__}"
        )
    for label, tr in variants.items():
        if not isinstance(label, str):
            raise TypeError(f"variants keys must be str labels, got {label!r}")
        items.append((label, check_trace(tr, f"variants[{label!r}]")))
    return items


def _pane(i: int, label: str, trace: AttentionTrace, tokens: Any, stages: Any, heads: Any,
          first_heads: int, colormap: str, diverging: str | None,
          scales: Mapping[str, str] | None = None, key_tokens: Any = None) -> str:
    """One variant's ``<section>``: square panels as cells with tooltips, the rest images."""
    try:
        tokens = check_tokens(tokens, trace.seq_len)
    except ValueError as err:
        raise ValueError(f"variants[{label!r}]: {err}") from None
    if heads is not None and i > 0:  # keep the heads that exist in this variant
        heads = [h for h in check_head_selection(heads, first_heads) if h < trace.n_heads] or None
    svg = diagram_svg(trace, tokens, stages=stages, heads=heads, colormap=colormap,
                      diverging=diverging, tooltips=trace.seq_len <= 24, id_prefix=f"aw{i}-",
                      vector_stages=("scores", "weights"), scales=scales, key_tokens=key_tokens)
    return (f'<section class="aw-variant" data-variant="{i}" data-label="{escape(label)}"'
            f'{" hidden" if i else ""}>\n{svg}</section>')


def _document(title: str, controls: str, summary: str, table: str, panes: list[str],
              data: str) -> str:
    """The page around its parts (every argument already escaped)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # a strict policy: nothing may be fetched; only the inline script and style run
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f'<body class="attention-widget-export">\n<h1>{title}</h1>\n'
        f'{controls}\n<p>Showing: <span id="aw-current" class="aw-summary">'
        f"{summary}</span></p>\n{table}\n" + "\n".join(panes)
        + f"\n<footer>{_FOOTER}</footer>\n"
        f'<script type="application/json" id="aw-data">{data}</script>\n'
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


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
    scales: Mapping[str, str] | None = None,
    key_tokens: Sequence[str] | None = None,
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
    colormap, diverging, stages, heads, scales
        As :func:`~attention_widget.export.diagram_svg` (``heads=None`` draws every head of
        each variant).
    settings : dict, optional
        Shown as a table (e.g. the widget's traits).
    key_tokens : list of str, optional
        One label per key column where the keys are not the tokens (cross-attention's source).

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
    trace = check_trace(trace)
    p = output_path(path, "the page")
    if p.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"path {str(p)!r} must end in .html or .htm")
    items = _variants(trace, variants)
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    page_title = escape(title or "Multi-head self-attention")
    panes = [_pane(i, label, tr, tokens, stages, heads, trace.n_heads, colormap, diverging,
                   scales, key_tokens) for i, (label, tr) in enumerate(items)]
    summaries = [long_summary(tr) if isinstance(tr, LongTrace) else summary(tr)
                 for _, tr in items]
    options = "".join(f'<option value="{i}">{escape(label)} — {escape(s)}</option>'
                      for i, ((label, _), s) in enumerate(zip(items, summaries, strict=True)))
    controls = (f'<div class="aw-controls"><label for="aw-variant">Show: </label>'
                f'<select id="aw-variant">{options}</select></div>' if len(items) > 1 else "")
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                   for k, v in (settings or {}).items())
    table = f'<table class="aw-settings">{rows}</table>' if rows else ""
    data = _script_json({"variants": [{"label": label, "summary": s}
                                      for (label, _), s in zip(items, summaries, strict=True)]})
    doc = _document(page_title, controls, escape(summaries[0]), table, panes, data)
    p.write_text(doc, encoding="utf-8")
    return p
