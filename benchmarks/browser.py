"""Speed in a real browser: slider step -> repaint of every stage image, against the kernel floor.

Run from the repository root (needs Voila, playwright and /usr/bin/chromium)::

    python benchmarks/browser.py            # all measurements
    python benchmarks/browser.py --steps 31 # more samples
    python benchmarks/browser.py --gap-ms 400  # steps from a longer idle (a hand's pace)
    python benchmarks/browser.py --plain-server  # Voila's own websocket connection class
    python benchmarks/browser.py --alternate     # back and forth between two values
    python benchmarks/browser.py --view detailed,overview  # views, in this order
    python benchmarks/browser.py --long          # a long prompt: 8,192 tokens

Voila runs with the opt-in of ``docs/network.md`` (``attention_widget.server.VOILA_OPTION``):
:class:`attention_widget.server.NoDelayKernelConnection`, ``TCP_NODELAY`` on the kernel
websocket (JupyterLab and Notebook 7 get the same from the package's server extension).
``--plain-server`` overrides that with Voila's default class: Nagle's algorithm on the
websocket, where the browser's delayed ACKs can hold the second half of a step's burst of
small messages for up to ~40 ms.

What it measures, all in one Voila server and one headless Chromium, in the same run:

* floor: a plain ipywidgets IntSlider whose observer sets a Label.  Time from the keydown on the
  focused slider handle to the frame in which the label shows the new value.  No kernel round
  trip can be faster than this.
* step -> repaint, ``AttentionWidget(n_heads=8, d_model=64)`` at seq_len 16 and 64: time from
  the keydown (ArrowRight on the temperature handle: every step a value not shown before, so
  every stage image is computed and sent anew) to the frame after
  ALL of these hold: the summary line (``.aw-summary``, updated last) shows the new value, and
  every stage figure whose image a temperature step changes (weights, head outputs, concat,
  focus; each figure is ONE bqplot ``Image`` mark, ``<image href="data:image/png;...">``, all
  panels in one PNG) has a new ``href`` AND has loaded and decoded it (a ``load`` listener on each
  ``<image>`` element, since Chromium fires ``load`` on an SVG image only to a listener on the
  element itself, then ``el.decode()``).  The time is read in the next
  ``requestAnimationFrame``, i.e. the frame that paints the new pixels.  Printed as a ratio to
  the floor; goal <= 2x.  Painted times move in steps of one 60 Hz frame, and where the
  floor's label lands in its frame decides much of that ratio (the same code measured
  1.7x and 2.7x twenty minutes apart); the line "before the frame" gives the ratio without that
  rounding: keydown -> every image loaded and decoded, over keydown -> the floor's label in
  the DOM.
* bare, at the same seq_lens: the same four stage figures
  (:class:`attention_widget.plots.PanelFigure`) on a page of their own, updated from attention
  arrays computed before the first step: each step is only the figures' colouring, PNGs and
  messages, and the browser's work -- no engine, no widget.  What the rendering alone costs
  against the floor.
* each widget case runs for the overview (the default view: one figure, whose images of
  the weights, head outputs, concat and output a temperature step changes) and for the
  detailed view (the four stage figures above), in the same run (``--view`` picks one).
* drag: a 30-move mouse drag of the temperature handle (about 1 s, like a hand), then the time
  from mouse-up until the widget settles on the final value: the summary shows the value the
  slider's readout shows, and no stage image changes or finishes loading any more.  Goal < 2 s.

* ``--long``: step -> repaint for a long prompt, ``AttentionWidget`` on 8,192 tokens (d_model
  512, 8 heads, causal mask, as ``benchmarks/long.py``): the same measure, over the images a
  temperature step repaints there (every head's thumbnail, the focus head's overview, the
  zoom), and the summary line.  Goal <= 1 s.

Times are taken inside the page with ``performance.now()`` (keydown/pointerup listeners in the
capture phase; a MutationObserver checks the DOM).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.browser import (
    TRIVIAL_NOTEBOOK,
    JupyterServer,
    launch_browser,
    new_page,
    stop_on_sigterm,
    write_notebook,
)

PLAIN_CONNECTION = (  # Voila's (and jupyter_server's) own kernel websocket connection class
    "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection")
SENTENCE_16 = "The animal didn't cross the street because it was too tired to walk any further."

# The images a temperature step repaints: one bqplot Image mark per stage figure.
STEP_STAGES = ("weights", "outputs", "concat", "focus")
STEP_IMAGES = ", ".join(f".aw-fig-{stage} image" for stage in STEP_STAGES)
# ... in the overview: its images of the weights, head outputs, concat and output (the 4th
# to 7th of its image marks: X, Q/K/V, scores, weights, outputs, concat, output, bars).
OVERVIEW_IMAGES = ".aw-overview image"
OVERVIEW_PICK = [3, 4, 5, 6]
#: Per view: the images a temperature step repaints, and which of the selector's matches.
VIEW_IMAGES = {"detailed": (STEP_IMAGES, None), "overview": (OVERVIEW_IMAGES, OVERVIEW_PICK)}
# ... and for a long prompt (the lens is not shown without a query)
LONG_IMAGES = ", ".join(f".aw-fig-long-{name} image" for name in ("heads", "focus", "zoom"))
LONG_CELL = """
from attention_widget import AttentionWidget
text = " ".join(f"w{i %% 997}" for i in range(%(n)d))
w = AttentionWidget(text, d_model=512, n_heads=8, mask="causal")
assert w.wait(300) and w.trace.seq_len == %(n)d, w.error
w
"""

# The bare page: the four figures a temperature step redraws, fed precomputed arrays.
BARE_CELL = """
import numpy as np, ipywidgets as W
from attention_widget import embed, init_params, multi_head_attention, tokenize
from attention_widget.plots import Panel, PanelFigure, shown_together
toks = tokenize(%(text)r)
assert len(toks) == %(n)d, len(toks)
x, params = embed(toks, 64), init_params(64, 8)
traces = [multi_head_attention(x, params, n_heads=8, temperature=float(t))
          for t in np.geomspace(0.1, 10.0, 101)]  # before any step: no maths in a step
figs = {s: PanelFigure("aw-fig-" + s, signed=s in ("outputs", "concat"),
                       square=s in ("weights", "focus")) for s in %(stages)r}
slider = W.IntSlider(value=0, min=0, max=100)
slider.add_class("aw-temperature")
summary = W.HTML()
summary.add_class("aw-summary")
def show(k):
    tr = traces[k]
    with shown_together(figs.values()):
        figs["weights"].update([Panel(tr.weights[i], f"head {i}", toks, toks)
                                for i in range(8)], ncols=4)
        figs["outputs"].update([Panel(tr.head_outputs[i], f"head {i}", toks)
                                for i in range(8)], ncols=8)
        figs["concat"].update([Panel(tr.concat, "concat", toks), Panel(tr.output, "output", toks)])
        figs["focus"].update([Panel(tr.weights[0], "head 0", toks, toks)])
    summary.value = f"step {k}, temperature={tr.temperature:.4g}"
show(0)
slider.observe(lambda change: show(change["new"]), "value")
box = W.VBox([slider, summary, *(f.figure for f in figs.values())])
box.add_class("attention-widget")
box
"""

INSTRUMENT_JS = """() => {
    if (window.__aw) return;
    const A = window.__aw = {tKey: null, tUp: null, done: null, check: null, loadErrors: 0};
    A.src = e => e.getAttribute('href') || e.getAttribute('xlink:href') || '';
    document.addEventListener('keydown', () => { A.tKey = performance.now(); }, true);
    document.addEventListener('pointerup', () => { A.tUp = performance.now(); }, true);
    document.addEventListener('mouseup', () => {
        if (A.tUp === null) A.tUp = performance.now(); }, true);
    // Chromium dispatches 'load' on an SVG <image> only if the element itself has a load
    // listener (a capturing listener on document is not enough), so hook every watched element.
    // After 'load', decode() resolves once the new pixels are decoded and ready for the next
    // paint; only then does the element count as repainted (el.__loaded = that href).
    A.hook = el => {
        if (el.__hooked) return;
        el.__hooked = true;
        el.addEventListener('load', () => {
            const h = A.src(el);
            el.decode().then(() => {
                if (A.src(el) !== h) return;
                el.__loaded = h;
                A.tLoaded = performance.now();
                if (A.check) A.check();
            }, () => { if (A.src(el) === h) A.loadErrors += 1; });
        });
        el.addEventListener('error', () => { A.loadErrors += 1; });
    };
}"""

# Arm a watcher: resolves (with the time of the next animation frame) once the text of
# `textSel` differs from its current value and every image matching `imgSel` has a new href
# and has loaded + decoded it.
ARM_JS = """([rootSel, textSel, imgSel, pick]) => {
    const A = window.__aw;
    const root = document.querySelector(rootSel);
    const all = () => [...root.querySelectorAll(imgSel)];
    const imgs = () => pick ? pick.map(i => all()[i]).filter(e => e) : all();
    const text = () => root.querySelector(textSel).textContent;
    imgs().forEach(A.hook);
    const before = {text: text(), hrefs: imgs().map(A.src)};
    A.tText = null; A.tHref = null; A.tFirst = null;
    A.done = new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            obs.disconnect(); A.check = null;
            reject(new Error('no repaint within 20 s: ' + text() + ' / ' +
                             before.hrefs.length + ' images, ' + A.loadErrors + ' load errors'));
        }, 20000);
        const check = () => {
            if (text() === before.text) return false;
            if (A.tText === null) A.tText = performance.now();
            const els = imgs();
            els.forEach(A.hook);  // a re-rendered figure brings a new element
            const now = els.map(A.src);
            if (now.length !== before.hrefs.length || now.some((h, i) => h === before.hrefs[i]))
                return false;
            if (A.tHref === null) A.tHref = performance.now();
            return els.every((e, i) => e.__loaded === now[i]);
        };
        const finish = () => {
            obs.disconnect(); A.check = null; clearTimeout(timer);
            const tLoad = performance.now();
            requestAnimationFrame(() => resolve([tLoad, performance.now()]));
        };
        const obs = new MutationObserver(records => {
            if (A.tFirst === null && records.some(r => {
                    const el = r.target.closest ? r.target : r.target.parentElement;
                    return !(el && el.closest('.aw-controls, .widget-slider, .aw-busy, style'));
                })) A.tFirst = performance.now();  // first change outside the controls
            if (check()) finish();
        });
        A.check = () => { if (check()) finish(); };
        obs.observe(root, {subtree: true, attributes: true, childList: true,
                           characterData: true});
    });
    return before.hrefs.length;
}"""

# Record, for the drag, when the summary text and the image hrefs last changed, and when an
# image last finished loading + decoding.
TRACK_JS = """([rootSel, textSel, imgSel, pick]) => {
    const A = window.__aw;
    const root = document.querySelector(rootSel);
    const all = () => [...root.querySelectorAll(imgSel)];
    const imgs = () => pick ? pick.map(i => all()[i]).filter(e => e) : all();
    const hrefs = () => imgs().map(A.src).join('|');
    const text = () => root.querySelector(textSel).textContent;
    imgs().forEach(A.hook);
    const t0 = performance.now();
    const t = {text: text(), hrefs: hrefs(), tText: t0, tHrefs: t0, texts: 0, pending: 0};
    A.tLoaded = t0;
    A.track = t;
    A.tUp = null;
    A.trackState = () => {
        const els = imgs();
        t.pending = els.filter(e => e.__loaded !== A.src(e)).length;
        t.tLoaded = A.tLoaded;
        return t;
    };
    new MutationObserver(() => {
        const now = performance.now();
        imgs().forEach(A.hook);
        const s = text(), h = hrefs();
        if (s !== t.text) { t.text = s; t.tText = now; t.texts += 1; }
        if (h !== t.hrefs) { t.hrefs = h; t.tHrefs = now; }
    }).observe(root, {subtree: true, attributes: true, childList: true, characterData: true});
}"""


def _open(page: Any, server: JupyterServer, name: str, root_sel: str) -> None:
    page.goto(server.notebook_url(name))
    page.wait_for_selector(root_sel, timeout=60000)
    page.evaluate(INSTRUMENT_JS)


def measure_steps(
    page: Any, root_sel: str, text_sel: str, img_sel: str, slider_sel: str, steps: int, warmup: int,
    gap_ms: int = 100, alternate: bool = False, pick: list[int] | None = None,
) -> dict[str, list[float]]:
    """Times (ms) for ``steps`` ArrowRight presses, each measured alone.

    ``alternate``: ArrowRight and ArrowLeft in turn instead, back and forth between two values.
    That flatters the widget: each figure's hidden image buffer still holds the image of two
    steps ago, so a step sends no PNG, only the switches.

    ``paint``: keydown -> frame painting the change (in page: text changed, every image has a
    new href, loaded and decoded); ``loaded``: keydown -> the last of those conditions held;
    ``href``: keydown -> every image has its new href (not loaded yet); ``text``: keydown ->
    summary/label text changed (for the widget: the kernel's whole update has been applied, as
    the summary is sent last); ``first``: keydown -> first DOM change outside the controls
    (the kernel's reply has started to arrive); ``driver``: the same step seen from Python
    (press .. promise resolved), which includes playwright's own round trips.  ``gap_ms``:
    idle time before each press.
    """
    handle = page.locator(f"{root_sel} {slider_sel} .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    keys = ("paint", "loaded", "href", "text", "first", "driver")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(warmup + steps):
        n_images = page.evaluate(ARM_JS, [root_sel, text_sel, img_sel, pick])
        t0 = time.perf_counter()
        page.keyboard.press("ArrowLeft" if alternate and i % 2 else "ArrowRight")
        t_loaded, t_paint = page.evaluate("() => window.__aw.done")
        t_driver = (time.perf_counter() - t0) * 1000
        t_key, t_text, t_href, t_first = page.evaluate(
            "() => [window.__aw.tKey, window.__aw.tText, window.__aw.tHref, window.__aw.tFirst]"
        )
        if i >= warmup:
            times["paint"].append(t_paint - t_key)
            times["loaded"].append(t_loaded - t_key)
            times["href"].append((t_href if t_href is not None else t_text) - t_key)
            times["text"].append(t_text - t_key)
            times["first"].append((t_first if t_first is not None else t_text) - t_key)
            times["driver"].append(t_driver)
        page.wait_for_timeout(gap_ms)  # let the kernel go idle: measure one step, not a queue
    times["images"] = [float(n_images)]
    return times


def _temperature_of(summary: str) -> float:
    m = re.search(r"temperature=([0-9.eE+-]+)", summary)
    if not m:
        raise RuntimeError(f"no temperature in the summary line {summary!r}")
    return float(m.group(1))


def measure_drag(page: Any, root_sel: str, moves: int = 30, quiet_s: float = 1.5,
                 view: str = "detailed") -> dict:
    """A ``moves``-move mouse drag of the temperature handle; mouse-up -> settled time (s)."""
    img_sel, pick = VIEW_IMAGES[view]
    slider = page.locator(f"{root_sel} .aw-temperature")
    handle = slider.locator(".noUi-handle").first
    base = slider.locator(".noUi-base").first
    handle.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    hb, bb = handle.bounding_box(), base.bounding_box()
    x0, y0 = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    x1 = bb["x"] + 0.85 * bb["width"] if x0 < bb["x"] + 0.5 * bb["width"] else bb["x"] + 0.15 * bb[
        "width"
    ]
    page.evaluate(TRACK_JS, [root_sel, ".aw-summary", img_sel, pick])
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, moves + 1):  # ~1 s, like a hand; each move is a new slider value
        page.mouse.move(x0 + (x1 - x0) * k / moves, y0)
        page.wait_for_timeout(30)
    page.mouse.up()
    t_up = page.evaluate("() => window.__aw.tUp")
    readout = slider.locator(".widget-readout").first.inner_text()
    final = float(readout)
    deadline = time.monotonic() + 60
    while True:
        track = page.evaluate("() => window.__aw.trackState()")
        now = page.evaluate("() => performance.now()")
        shown = _temperature_of(track["text"])
        settled = abs(shown - final) <= 0.006 * final + 1e-9
        last = max(track["tText"], track["tHrefs"], track["tLoaded"])
        quiet = track["pending"] == 0 and now - last > quiet_s * 1000
        if settled and quiet:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"drag did not settle: summary {track['text']!r}, readout {readout}")
        page.wait_for_timeout(100)
    return {
        "settle_s": max(0.0, last - t_up) / 1000,  # 0: already settled at mouse-up
        "final": readout,
        "summary_updates": track["texts"],
    }


def _steps_on(browser: Any, server: JupyterServer, notebook: str, args: argparse.Namespace,
              view: str = "detailed") -> tuple[Any, Any, dict[str, list[float]]]:
    """Open ``notebook`` on a new page; time temperature steps of its four changing images.

    Returns the page (still open), its console log and :func:`measure_steps`'s times.
    """
    page, log = new_page(browser)
    _open(page, server, notebook, ".attention-widget .aw-summary")
    images, pick = VIEW_IMAGES[view]
    page.wait_for_selector(images.split(",")[-1].strip(), timeout=60000)
    times = measure_steps(
        page, ".attention-widget", ".aw-summary", images, ".aw-temperature", args.steps,
        args.warmup, args.gap_ms, args.alternate, pick,
    )
    if times["images"] != [4.0]:
        raise RuntimeError(f"expected 4 stage images, found {times['images']}")
    return page, log, times


def _widget_cases(browser: Any, server: JupyterServer, args: argparse.Namespace,
                  views: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Temperature steps of the widget in each view and of the bare figures; the drag."""
    results: dict[str, Any] = {}
    errors: list[str] = []
    for view in views:
        for n in (16, 64):
            page, log, times = _steps_on(browser, server, f"widget{n}_{view}.ipynb", args, view)
            key = f"{view}{n}"
            results[key] = statistics.median(times["paint"])
            results[f"{key}_p90"] = sorted(times["paint"])[int(0.9 * (len(times["paint"]) - 1))]
            for part in ("text", "href", "loaded", "first", "driver"):
                results[f"{key}_{part}"] = statistics.median(times[part])
            if n == 64:
                results[f"{view}_drag"] = measure_drag(page, ".attention-widget", view=view)
            errors += log.real_errors()
            page.close()
    for n in (16, 64):
        page, log, times = _steps_on(browser, server, f"bare{n}.ipynb", args)
        results[f"bare{n}"] = statistics.median(times["paint"])
        results[f"bare{n}_loaded"] = statistics.median(times["loaded"])
        errors += log.real_errors()
        page.close()
    return results, errors


def _report_widget(results: dict[str, Any], views: list[str]) -> None:
    floor_ms = results["floor"]
    for view in views:
        for n in (16, 64):
            key = f"{view}{n}"
            ratio = results[key] / floor_ms
            verdict = "ok" if ratio <= 2 else "SLOWER than goal"
            print(
                f"  {view:<9} seq_len={n:<3} 8 heads: step -> repaint  {results[key]:7.1f} ms "
                f"(p90 {results[f'{key}_p90']:.0f} ms)  = {ratio:.2f}x floor "
                f"(goal <= 2x: {verdict})"
            )
            print(
                f"      keydown -> first DOM change {results[f'{key}_first']:.0f} ms, -> summary "
                f"(sent last) {results[f'{key}_text']:.0f} ms, -> 4 new hrefs "
                f"{results[f'{key}_href']:.0f} ms, -> all 4 loaded+decoded "
                f"{results[f'{key}_loaded']:.0f} ms; seen from Python "
                f"{results[f'{key}_driver']:.0f} ms = "
                f"{results[f'{key}_driver'] / results['floor_driver']:.2f}x its floor; before "
                f"the frame {results[f'{key}_loaded'] / results['floor_loaded']:.2f}x"
            )
        drag = results[f"{view}_drag"]
        verdict = "ok" if drag["settle_s"] < 2 else "SLOWER than goal"
        print(
            f"  {view:<9} 30-move drag of temperature (seq_len=64): mouse-up -> settled on "
            f"{drag['final']} in {drag['settle_s']:.2f} s "
            + ("(the last repaint was done before mouse-up) " if drag["settle_s"] == 0 else "")
            + f"({drag['summary_updates']} summary updates; goal < 2 s: {verdict})"
        )
    for n in (16, 64):
        print(
            f"  seq_len={n:<3} bare: the 4 figures alone, arrays precomputed (no engine, no "
            f"widget): {results[f'bare{n}']:.1f} ms = {results[f'bare{n}'] / floor_ms:.2f}x "
            f"floor; before the frame "
            f"{results[f'bare{n}_loaded'] / results['floor_loaded']:.2f}x"
        )
def long_steps(browser: Any, server: JupyterServer, args: argparse.Namespace, n: int) -> dict:
    """Step -> repaint of a long prompt's widget (median, p90, and when the summary changed)."""
    page, log = new_page(browser)
    _open(page, server, "long.ipynb", ".attention-widget .aw-summary")
    page.wait_for_selector(".aw-fig-long-zoom image", timeout=300000)
    times = measure_steps(page, ".attention-widget", ".aw-summary", LONG_IMAGES,
                          ".aw-temperature", args.steps, args.warmup, args.gap_ms)
    if times["images"] != [3.0]:
        raise RuntimeError(f"expected 3 long-prompt images, found {times['images']}")
    paint = sorted(times["paint"])
    out = {"n": n, "paint": statistics.median(paint), "p90": paint[int(0.9 * (len(paint) - 1))],
           "text": statistics.median(times["text"]), "first": statistics.median(times["first"]),
           "errors": log.real_errors()}
    page.close()
    return out


def main_long(args: argparse.Namespace) -> int:
    """``--long``: the step -> repaint of a widget on 8,192 tokens in Voila and Chromium."""
    root = Path(tempfile.mkdtemp(prefix="aw-bench-long-"))
    n = 8192
    write_notebook(root / "long.ipynb", [LONG_CELL % {"n": n}])
    load_before = os.getloadavg()
    with JupyterServer("voila", root, timeout=120) as server, launch_browser() as browser:
        r = long_steps(browser, server, args, n)
    load_after = os.getloadavg()
    verdict = "ok" if r["paint"] <= 1000 else "SLOWER than goal"
    print(f"browser benchmark, long prompt: Voila + headless Chromium, {n:,} tokens, d_model "
          f"512, 8 heads, causal; median of {args.steps} temperature steps, {args.gap_ms} ms "
          f"idle before each (load average 1/5 min before {load_before[0]:.2f}/"
          f"{load_before[1]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}; "
          f"{os.cpu_count()} cores)")
    print(f"  step -> repaint {r['paint']:.0f} ms (p90 {r['p90']:.0f} ms; goal <= 1 s: "
          f"{verdict}); keydown -> first DOM change {r['first']:.0f} ms, -> summary (sent "
          f"last) {r['text']:.0f} ms")
    if r["errors"]:
        print("console errors:", *r["errors"], sep="\n  ")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=21, help="measured steps per case (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", choices=["floor", "all"], default="all")
    ap.add_argument("--view", default="overview,detailed",
                    help="the widget's views, measured in this order in the same run "
                         "(overview, detailed, or both comma-separated)")
    ap.add_argument("--plain-server", action="store_true",
                    help="Voila with its own connection class (Nagle on the websocket)")
    ap.add_argument("--gap-ms", type=int, default=100,
                    help="idle time before each step (floor and widget alike)")
    ap.add_argument("--alternate", action="store_true",
                    help="step back and forth between two values (no PNG resent: flattering)")
    ap.add_argument("--long", action="store_true",
                    help="a long prompt (8,192 tokens) instead of the short widgets")
    args = ap.parse_args(argv)
    if not args.alternate and args.steps + args.warmup > 100:
        ap.error("--steps + --warmup must be at most 100 (the sliders' room to the right)")
    stop_on_sigterm()  # a timeout must not leave Voila and its kernels running
    views = args.view.split(",")
    if not views or not set(views) <= {"overview", "detailed"}:
        ap.error(f"--view must name overview and/or detailed, got {args.view!r}")
    if args.long:
        return main_long(args)

    root = Path(tempfile.mkdtemp(prefix="aw-bench-"))
    write_notebook(root / "floor.ipynb", TRIVIAL_NOTEBOOK)
    for n in (16, 64):
        text = " ".join([SENTENCE_16] * (n // 16))
        for view in ("overview", "detailed"):
            write_notebook(root / f"widget{n}_{view}.ipynb", [
                "from attention_widget import AttentionWidget\n"
                f"w = AttentionWidget(text={text!r}, d_model=64, n_heads=8, view={view!r})\n"
                f"assert w.trace.seq_len == {n}, w.trace.seq_len\n"
                "w"])
        bare = BARE_CELL % {"text": text, "n": n, "stages": STEP_STAGES}
        write_notebook(root / f"bare{n}.ipynb", [bare])
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    extra = [f"--Voila.kernel_websocket_connection_class={PLAIN_CONNECTION}"] if (
        args.plain_server) else []
    with JupyterServer("voila", root, extra_args=extra) as server, launch_browser() as browser:
        page, log = new_page(browser)
        _open(page, server, "floor.ipynb", ".trivial-slider")
        root_sel = ".jp-OutputArea-output"
        floor = measure_steps(
            page, root_sel, ".trivial-label", "img.none", ".trivial-slider", args.steps,
            args.warmup, args.gap_ms, args.alternate,
        )
        results["floor"] = statistics.median(floor["paint"])
        results["floor_loaded"] = statistics.median(floor["loaded"])  # label in the DOM
        results["floor_driver"] = statistics.median(floor["driver"])
        errors = log.real_errors()
        page.close()
        if args.only == "all":
            more, more_errors = _widget_cases(browser, server, args, views)
            results.update(more)
            errors += more_errors
        if errors:
            print("console errors:", *errors, sep="\n  ")

    load_after = os.getloadavg()
    server_kind = "plain, Nagle on" if args.plain_server else "as installed: TCP_NODELAY"
    print(f"browser benchmark: Voila ({server_kind}) + "
          f"headless Chromium, median of {args.steps} steps each, "
          f"{args.gap_ms} ms idle before each, "
          + ("back and forth between two values" if args.alternate else "every step a new value")
          + f" (load average 1/5 min before "
          f"{load_before[0]:.2f}/{load_before[1]:.2f}, after "
          f"{load_after[0]:.2f}/{load_after[1]:.2f}; {os.cpu_count()} cores)")
    print(
        f"  floor  slider -> kernel -> Label          {results['floor']:7.1f} ms  "
        f"(label in the DOM at {results['floor_loaded']:.1f} ms; "
        f"seen from Python: {results['floor_driver']:.0f} ms)"
    )
    if args.only == "all":
        _report_widget(results, views)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
