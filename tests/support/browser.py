"""Start JupyterLab / Voila and headless Chromium for the browser tests and the benchmark.

Nothing here runs at import time: import it freely (``tests/conftest.py`` and
``benchmarks/browser.py`` both do).  The comments say which race each wait below closes.

Usage
-----
>>> with JupyterServer("lab", root_dir) as lab, launch_browser() as browser:  # doctest: +SKIP
...     page = new_page(browser)
...     page.goto(lab.url("lab/tree/tour.ipynb"))
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

CHROMIUM = os.environ.get("AW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 1000}
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOTS = REPO / "build" / "screenshots"

# Console messages that are not errors of ours.  Each entry: (substring, or substrings that
# must all occur, why it is harmless).
KNOWN_CONSOLE_NOISE: tuple[tuple[str | tuple[str, ...], str], ...] = (
    # Chromium asks for /favicon.ico on Voila pages; Voila serves none -> 404 logged as error.
    ("favicon.ico", "the browser's automatic favicon request; no page code involved"),
    # Voila's default template links Font Awesome CSS from a CDN; these test machines have no
    # internet (ERR_NAME_NOT_RESOLVED).  The widget uses no icon font; with internet it loads.
    (
        "@ https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free",
        "Voila template's CDN stylesheet, unreachable offline",
    ),
    # Notebook 7.6.5 throws this on every notebook page, with no widget and with every
    # federated extension disabled: its shortcuts plugin reads the settings schema of a
    # plugin that is not (yet) in its registry.  Matched with the file it comes from.
    (
        ("(reading 'schema')", " @ /static/notebook/notebook_core."),
        "Notebook 7's own settings code; shows nothing and changes nothing on the page",
    ),
    # Voila loads every JupyterLab extension installed, and fails to load Notebook 7's (which
    # only adds Notebook buttons to JupyterLab): webpack module federation, RUNTIME-012.
    # Any Voila page logs it where the `notebook` package is installed; nothing else changes.
    (
        ("The getter for the shared module is not a function",
         "/voila/labextensions/@jupyter-notebook/lab-extension/static/remoteEntry."),
        "Notebook 7's JupyterLab extension failing to load in Voila; unrelated to the page",
    ),
)


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may contain spaces and parentheses: split after the last ')'
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children first-level first)."""
    tree = _children_map()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate ``proc``, its process group and every descendant (kernels run in their own
    session, so the group alone is not enough); SIGKILL whatever survives ``grace`` seconds."""
    pids = [proc.pid, *descendants(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if pid == proc.pid:
                    os.killpg(proc.pid, sig)  # the server was started as a session leader
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is None or any(_alive(p) for p in pids[1:]):
                time.sleep(0.05)
                continue
            break
        if proc.poll() is not None and not any(_alive(p) for p in pids[1:]):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def stop_on_sigterm() -> None:
    """Turn SIGTERM (a CI timeout, ``timeout(1)``) into KeyboardInterrupt, so that ``finally``
    blocks and fixture finalizers still stop the servers; by default Python dies without them."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


def _http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


@dataclass
class JupyterServer:
    """JupyterLab (``kind="lab"``), Notebook 7 (``"notebook"``) or Voila (``"voila"``) on
    127.0.0.1 with a token.

    Parameters
    ----------
    kind : "lab", "notebook" or "voila"
    root_dir : Path
        Served folder (Voila serves every notebook in it under ``/voila/render/<name>``).
    timeout : float
        Seconds to wait for the server to answer.

    Notes
    -----
    Config, runtime, IPython and (Lab) settings/workspace dirs are fresh temp folders, so
    nothing of the machine's user setup leaks in, and the "Jupyter news" toast is switched off.
    The server runs in its own session; :meth:`stop` shuts it down and kills its whole process
    tree, kernels included.  Use it as a context manager or call :meth:`stop` in a finalizer.
    """

    kind: str
    root_dir: Path
    timeout: float = 60.0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("lab", "notebook", "voila"):
            raise ValueError(f"kind must be 'lab', 'notebook' or 'voila', got {self.kind!r}")
        self.root_dir = Path(self.root_dir)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> JupyterServer:
        """Start the server and block until it answers (raises if it dies or times out)."""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"aw-{self.kind}-"))
        env = dict(os.environ)
        for var, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ):
            (self.tmp / sub).mkdir()
            env[var] = str(self.tmp / sub)
        env.pop("JUPYTER_TOKEN", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.port = free_port()
        if self.kind in ("lab", "notebook"):  # Notebook 7 is built on JupyterLab's server app
            app = "LabApp" if self.kind == "lab" else "JupyterNotebookApp"
            settings = self.tmp / "settings"
            notif = settings / "@jupyterlab" / "apputils-extension"
            notif.mkdir(parents=True)
            (notif / "notification.jupyterlab-settings").write_text(
                json.dumps({"fetchNews": "false", "checkForUpdates": False})
            )
            (self.tmp / "workspaces").mkdir()
            cmd = [
                sys.executable, "-m", "jupyterlab" if self.kind == "lab" else "notebook",
                "--no-browser", "--allow-root",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root_dir}",
                f"--{app}.workspaces_dir={self.tmp / 'workspaces'}",
                f"--{app}.user_settings_dir={settings}",
            ]  # fmt: skip
            if self.kind == "lab":
                cmd += [
                    "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-m", "voila", "--no-browser", f"--port={self.port}",
                "--Voila.ip=127.0.0.1", f"--token={self.token}",
                "--show_tracebacks=True", str(self.root_dir),
            ]  # fmt: skip
            if not any(a.startswith("--Voila.kernel_websocket_connection_class")
                       for a in self.extra_args):
                from attention_widget.server import VOILA_OPTION

                cmd.append(VOILA_OPTION)  # the opt-in docs/network.md gives (TCP_NODELAY)
        cmd += self.extra_args
        self.log_path = self.tmp / "server.log"
        log = open(self.log_path, "wb")  # the child keeps its own copy of the descriptor
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        probe = (
            self.url("voila/static/voila.js") if self.kind == "voila" else self.url("api/status")
        )
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.log()}")
            with contextlib.suppress(OSError):
                if _http_get(probe) == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} not ready in {self.timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Shut down the server, its kernels and every process it started; remove temp dirs."""
        if self.proc is not None and self.proc.poll() is None:
            if self.kind != "voila":  # clean shutdown first: the server stops its kernels
                with contextlib.suppress(OSError):
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{self.port}/api/shutdown",
                        method="POST",
                        headers={"Authorization": f"token {self.token}"},
                    )
                    urllib.request.urlopen(req, timeout=5).close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    # the shutdown is asynchronous: give kernels a moment to exit
                    self.proc.wait(timeout=5)
        if self.proc is not None:
            kill_tree(self.proc)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------
    def url(self, path: str = "") -> str:
        """Absolute URL of ``path`` on this server, token included."""
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def notebook_url(self, name: str, query: str = "") -> str:
        """The page that opens (Lab, Notebook 7) or renders (Voila) notebook ``name``."""
        path = {"lab": "lab/tree", "notebook": "notebooks", "voila": "voila/render"}[self.kind]
        path = f"{path}/{name}"
        return self.url(f"{path}?{query}" if query else path)

    def log(self) -> str:
        """The server's combined stdout/stderr so far (for failure messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-5000:]


# ------------------------------------------------------------------------------------------
# notebooks
# ------------------------------------------------------------------------------------------
def write_notebook(path: Path, cells: list[str | tuple[str, str]]) -> Path:
    """Write a notebook of code cells (or ``("markdown", text)`` pairs) with a python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    for cell in cells:
        if isinstance(cell, tuple):
            nb.cells.append(nbformat.v4.new_markdown_cell(cell[1]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell))
    nbformat.write(nb, path)
    return path


TRIVIAL_NOTEBOOK = [
    "import ipywidgets as W\n"
    "slider = W.IntSlider(value=0, min=0, max=100, description='n')\n"
    "label = W.Label('value=0')\n"
    "label.add_class('trivial-label')\n"
    "slider.add_class('trivial-slider')\n"
    "slider.observe(lambda ch: setattr(label, 'value', f\"value={ch['new']}\"), 'value')\n"
    "W.VBox([slider, label])",
]


# ------------------------------------------------------------------------------------------
# the browser
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def launch_browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Python playwright; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page reported: console errors, uncaught exceptions, dialogs (all dismissed)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def real_errors(self) -> list[str]:
        """Console errors and uncaught exceptions minus :data:`KNOWN_CONSOLE_NOISE`."""
        errs = self.console_errors + self.page_errors

        def known(err: str) -> bool:
            return any(all(part in err for part in ((s,) if isinstance(s, str) else s))
                       for s, _why in KNOWN_CONSOLE_NOISE)

        return [e for e in errs if not known(e)]


PAGE_STATE_JS = """() => {
    const texts = sel => [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
    return {
        url: location.href,
        prompts: texts('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'),
        status: texts('#jp-main-statusbar, .jp-Notebook-ExecutionIndicator, .jp-KernelStatus'),
        dialogs: texts('.jp-Dialog'),
        errors: texts('.jp-OutputArea-output[data-mime-type*="error"]').map(t => t.slice(-1500)),
    };
}"""


def page_state(page: Any, log: PageLog) -> str:
    """What a page shows and reported, for a failed test's report (never raises)."""
    try:
        shown = page.evaluate(PAGE_STATE_JS)
    except Exception as exc:  # a closed or hung page: say so instead
        shown = f"(the page could not be read: {exc})"
    return f"{shown}\nconsole errors: {log.console_errors}\npage errors: {log.page_errors}"


def new_page(browser: Any) -> tuple[Any, PageLog]:
    """A fresh context + page (1280x1000) that records console errors and dialogs.

    Every dialog (``alert``, ``confirm``, ``beforeunload``...) is recorded and dismissed, so a
    dialog can never block the test; tests assert ``log.dialogs == []`` where none may open.
    """
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    log = PageLog()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            log.console_errors.append(f"{msg.text} @ {loc.get('url', '')}")

    def on_dialog(dialog: Any) -> None:
        log.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(Exception):
            dialog.dismiss()

    page.on("console", on_console)
    def on_page_error(exc: Any) -> None:
        # where it was thrown: the path of the top frame's script (no host, no query)
        frame = re.search(r"\n\s+at .*?https?://[^/\s]+(/[^?:\s)]+)", exc.stack or "")
        log.page_errors.append(f"uncaught: {exc.message} @ {frame[1] if frame else '?'}")

    page.on("pageerror", on_page_error)
    page.on("dialog", on_dialog)
    return page, log


# ------------------------------------------------------------------------------------------
# JupyterLab (and Notebook 7) actions
# ------------------------------------------------------------------------------------------
# JS: the notebook's kernel has started and is idle.  JupyterLab says so in its status bar
# ("Python 3 (ipykernel) | Idle"); Notebook 7 has no status bar, but its toolbar names the
# kernel and its execution indicator carries the status.
KERNEL_IDLE_JS = """() => {
    const bar = document.querySelector('#jp-main-statusbar');
    if (bar) return /Python 3 \\(ipykernel\\)\\s*\\|\\s*Idle/.test(bar.textContent);
    const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
    const status = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
    return !!(name && /Python 3 \\(ipykernel\\)/.test(name.textContent)
              && status && status.dataset.status === 'idle');
}"""


def lab_run_all(page: Any, timeout: float = 60.0) -> None:
    """Wait for the kernel to be idle, then Run -> Run All Cells, and check it started.

    JupyterLab and Notebook 7 alike (the same notebook panel and menus).  The toolbar reads
    "idle" before any kernel exists, and Run All clicked then runs nothing; so wait for the
    kernel's own name next to "Idle" (:data:`KERNEL_IDLE_JS`), then check that the first
    prompt becomes ``[*]:`` or ``[1]:``; retry once if it did not.
    """
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout * 1000)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout * 1000)
    for _attempt in range(3):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-item[data-command='runmenu:run-all']")
        try:
            page.wait_for_function(
                """() => {
                    const p = document.querySelector(
                        '.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt');
                    return p && /\\[(\\*|1)\\]/.test(p.textContent);
                }""",
                timeout=15000,
            )
            return
        except Exception:  # retried, then raised below
            page.keyboard.press("Escape")
    raise AssertionError("JupyterLab: Run All did not start executing the notebook")


def lab_wait_all_done(page: Any, timeout: float = 90.0) -> None:
    """Wait until every code cell has a number prompt (none ``[*]`` or empty) and no error."""
    page.wait_for_function(
        """() => {
            const ps = [...document.querySelectorAll(
                '.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')];
            return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout * 1000,
    )
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    if tracebacks.count():
        raise AssertionError(f"a cell raised: {tracebacks.first.inner_text()[:2000]}")
    del errors  # stderr (warnings) is allowed; only errors fail


def open_and_run_all(page: Any, server: JupyterServer, name: str,
                     timeout_ms: float = 60000) -> None:
    """Open notebook ``name`` in JupyterLab or Notebook 7, Run All, wait for every cell."""
    page.goto(server.notebook_url(name), timeout=timeout_ms)
    lab_run_all(page)
    lab_wait_all_done(page)


def lab_append_cell_and_run(page: Any, code: str) -> None:
    """Add a code cell at the end of the open notebook, type ``code`` and run it."""
    last = page.locator(".jp-NotebookPanel .jp-Cell").last
    last.locator(".jp-InputPrompt").click()  # select it (command mode)
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # insert below, in command mode
    page.keyboard.press("Enter")  # edit mode
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


# ------------------------------------------------------------------------------------------
# widget interactions (Lab, Notebook 7 and Voila alike)
# ------------------------------------------------------------------------------------------
def drag_slider(page: Any, slider: Any, fraction: float, moves: int = 10) -> None:
    """Drag the noUiSlider handle inside ``slider`` (a locator) to ``fraction`` of its track.

    Presses the mouse on the handle's centre, moves in ``moves`` steps along ``.noUi-base`` and
    releases: what a person does.
    """
    handle = slider.locator(".noUi-handle").first
    base = slider.locator(".noUi-base").first
    handle.scroll_into_view_if_needed()
    hb, bb = handle.bounding_box(), base.bounding_box()
    if hb is None or bb is None:
        raise AssertionError("slider is not visible")
    x0, y0 = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    x1 = bb["x"] + min(max(fraction, 0.0), 1.0) * bb["width"]
    if fraction <= 0.0 or fraction >= 1.0:  # "to the end": past it, as a hand does
        x1 += -20.0 if fraction <= 0.0 else 20.0
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y0, steps=moves)
    page.mouse.up()


def press_slider(page: Any, slider: Any, key: str, times: int = 1) -> None:
    """Focus the slider handle and press ``key`` (e.g. ArrowRight) ``times`` times."""
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(times):
        page.keyboard.press(key)


# JS: resolve after two animation frames (the browser has painted whatever was queued)
TWO_FRAMES_JS = """() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(
    () => r(performance.now()))))"""


# A stage figure (``.aw-figure.aw-fig-<stage>``) draws all its panels as ONE bqplot ``Image``
# mark: ``<image class="image_pixelated" href="data:image/png;base64,...">``, a palette PNG with
# one pixel per cell, transparent outside the panels.  Every repaint gives it a new href.
STAGE_IMAGE = "image"


DATA_PNG = "data:image/png;base64,"  # how the figures send their PNGs (no Blob, no object URL)


def image_hrefs(root: Any, selector: str = f".aw-fig-weights {STAGE_IMAGE}") -> list[str]:
    """Current ``href`` of every image matching ``selector`` under ``root``."""
    return root.evaluate(
        """(root, sel) => [...root.querySelectorAll(sel)].map(
            img => img.getAttribute('href') || img.getAttribute('xlink:href') || '')""",
        selector,
    )


def wait_stable_hrefs(
    page: Any, root: Any, selector: str = f".aw-fig-weights {STAGE_IMAGE}", quiet_ms: int = 400,
    timeout: float = 20.0,
) -> list[str]:
    """Wait until the image hrefs under ``root`` stop changing for ``quiet_ms``; return them."""
    deadline = time.monotonic() + timeout
    last = image_hrefs(root, selector)
    since = time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(50)
        now = image_hrefs(root, selector)
        if now != last:
            last, since = now, time.monotonic()
        elif (time.monotonic() - since) * 1000 >= quiet_ms:
            return last
    raise AssertionError(f"images under {selector!r} kept changing for {timeout} s")


def screenshot(page: Any, target: Any, name: str) -> Path:
    """Save a PNG of ``target`` (a locator) to ``build/screenshots/<name>.png``.

    A target taller than the page is taken in a page made tall enough for it (then the page
    is set back), so that no toolbar of the page lies over it.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size
    box = target.first.bounding_box()
    if size and box and box["height"] + 160 > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": int(box["height"]) + 200})
        page.wait_for_timeout(700)  # let bqplot relayout after the resize
    target.scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    target.screenshot(path=str(path))
    if page.viewport_size != size:
        page.set_viewport_size(size)
        page.wait_for_timeout(700)
    return path


# ------------------------------------------------------------------------------------------
# the tour's widget, exercised the same way in JupyterLab and in Voila
# ------------------------------------------------------------------------------------------
TOUR_TEXT = "The animal didn't cross the street because it was too tired."
TOUR_FIRST_CELL = (
    'w = AttentionWidget(text="The animal didn\'t cross the street because it was too tired.", '
    "d_model=64, n_heads=4)"
)
TOUR_INITIAL = {"seq_len": "12", "d_model": "64", "n_heads": "4", "n_kv_heads": "4",
                "temperature": "1", "mask": "none"}  # fmt: skip
D_MODEL_OPTIONS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
# Two script payloads plus one that would set a flag instead of opening a dialog; 31
# tokens, so that every token still labels an axis row (up to 32 are labelled).
XSS_TEXT = "<img src=x onerror=alert(1)> <script>alert(2)</script> <svg onload=__pw=1>"
STAGE_FIGS = (".aw-fig-scores", ".aw-fig-weights", ".aw-fig-outputs")

# A notebook that renders a fresh widget from the query string (Voila passes it to the kernel
# as $QUERY_STRING): the reference "fresh render" of given values.
REFERENCE_NOTEBOOK = [
    "import os\n"
    "import urllib.parse\n"
    "from attention_widget import AttentionWidget\n"
    "q = dict(urllib.parse.parse_qsl(os.environ['QUERY_STRING']))\n"
    "ref = AttentionWidget(text=q['text'], d_model=int(q['d_model']), n_heads=int(q['n_heads']),\n"
    "                      temperature=float(q['temperature']), view='detailed')\n"
    "ref.add_class('aw-reference')\n"
    "ref",
]


def show_view(page: Any, widget: Any, view: str) -> None:
    """Click the View group's ``overview`` / ``detailed`` button and wait for that view."""
    widget.locator(".aw-view button", has_text=view).first.click()
    target = ".aw-fig-weights image" if view == "detailed" else ".aw-overview image"
    widget.locator(target).first.wait_for(timeout=30000)
    wait_stable_hrefs(page, widget, f"{target}", quiet_ms=300)


def summary_values(widget: Any) -> dict[str, str]:
    """The ``key=value`` pairs of the widget's ``.aw-summary`` line."""
    # textContent, not innerText: Lab skips rendering off-screen cells (content-visibility)
    text = widget.locator(".aw-summary").first.text_content() or ""
    return dict(part.strip().split("=", 1) for part in text.split(",") if "=" in part)


def wait_summary(page: Any, widget: Any, expected: dict[str, str], timeout: float = 30.0) -> None:
    """Wait until the summary line shows every ``expected`` ``key=value`` (it is updated last,
    after every panel was sent), then until the stage images stop changing."""
    deadline = time.monotonic() + timeout
    while True:
        got = summary_values(widget)
        if all(got.get(k) == v for k, v in expected.items()):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"summary shows {got}, expected {expected}")
        page.wait_for_timeout(50)
    every_image = ", ".join(f"{fig} {STAGE_IMAGE}" for fig in STAGE_FIGS)
    wait_stable_hrefs(page, widget, every_image, quiet_ms=300)


def stage_hrefs(widget: Any) -> dict[str, list[str]]:
    """``{figure class: [href of each image]}`` for scores, weights and head outputs."""
    return {fig: image_hrefs(widget, f"{fig} {STAGE_IMAGE}") for fig in STAGE_FIGS}


# JS: decode a figure's image PNG (from its data: URL) on a canvas and find its panels:
# pixels outside the panels are fully transparent, every cell (masked ones too: opaque grey)
# is opaque.  Row bands = runs of rows with any opaque pixel; panels = runs of columns with
# any opaque pixel within a band.  One pixel is one cell, so each panel's colours are read
# pixel by pixel.  Also returns the screen geometry of the image and of the panel titles
# (bqplot Label text), to check that titles sit above their panels.
FIGURE_PANELS_JS = """async ([fig, imgSel]) => {
    const els = [...fig.querySelectorAll(imgSel)];
    if (els.length !== 1) return {error: `${els.length} images in the figure, expected 1`};
    const el = els[0];
    const href = el.getAttribute('href') || el.getAttribute('xlink:href') || '';
    const im = new Image();
    im.src = href;
    try { await im.decode(); } catch (e) {
        return {retry: true, error: `cannot decode ${href.slice(0, 60)}: ${e}`};
    }
    const w = im.naturalWidth, h = im.naturalHeight;
    const c = document.createElement('canvas');
    c.width = w; c.height = h;
    const ctx = c.getContext('2d', {willReadFrequently: true});
    ctx.drawImage(im, 0, 0);
    const px = ctx.getImageData(0, 0, w, h).data;
    const alpha = (x, y) => px[4 * (y * w + x) + 3];
    let partial = 0;  // neither transparent nor opaque: never in our PNG
    for (let k = 3; k < px.length; k += 4) if (px[k] !== 0 && px[k] !== 255) partial++;
    const runs = (n, opaque) => {
        const out = [];
        let start = -1;
        for (let i = 0; i <= n; i++) {
            const o = i < n && opaque(i);
            if (o && start < 0) start = i;
            if (!o && start >= 0) { out.push([start, i]); start = -1; }
        }
        return out;
    };
    const panels = [];
    const bands = runs(h, y => { for (let x = 0; x < w; x++) if (alpha(x, y)) return true;
                                 return false; });
    for (const [y0, y1] of bands) {
        const cols = runs(w, x => { for (let y = y0; y < y1; y++) if (alpha(x, y)) return true;
                                    return false; });
        for (const [x0, x1] of cols) {
            let holes = 0;  // transparent pixels inside the rectangle
            const colors = [];
            for (let y = y0; y < y1; y++) {
                const row = [];
                for (let x = x0; x < x1; x++) {
                    const k = 4 * (y * w + x);
                    if (px[k + 3] !== 255) holes++;
                    row.push((px[k] << 16) | (px[k + 1] << 8) | px[k + 2]);
                }
                colors.push(row);
            }
            panels.push({x: x0, y: y0, w: x1 - x0, h: y1 - y0, holes, colors});
        }
    }
    const box = r => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom});
    // panel titles are bold; a head's role is a second, normal-weight line under its title
    const bold = t => Number(getComputedStyle(t).fontWeight) >= 600;
    const titles = [...fig.querySelectorAll('text.label')].filter(bold).map(
        t => ({text: t.textContent, ...box(t.getBoundingClientRect())}));
    return {href, width: w, height: h, partial, panels, titles,
            screen: box(el.getBoundingClientRect())};
}"""


def figure_panels(widget: Any, fig: str, timeout: float = 20.0) -> dict[str, Any]:
    """The panels of figure ``fig`` (e.g. ``".aw-fig-weights"``) read from its image.

    Returns
    -------
    dict
        ``href``; ``width``, ``height`` of the PNG; ``partial`` (count of half-transparent
        pixels); ``panels``: one dict per panel in reading order (row bands top to bottom,
        left to right) with ``x, y, w, h`` in pixels (= cells), ``holes`` (transparent pixels
        inside) and ``colors`` (``h`` rows of ``w`` ints 0xRRGGBB); ``titles``: the panel
        titles' text and screen boxes; ``screen``: the image's screen box.
    """
    loc = widget.locator(fig).first
    # bqplot lays out a figure only once it is on screen: screen boxes need it in view
    loc.scroll_into_view_if_needed()
    deadline = time.monotonic() + timeout
    while True:
        wait_stable_hrefs(widget.page, widget, f"{fig} {STAGE_IMAGE}", quiet_ms=300)
        got = loc.evaluate("(f, sel) => (" + FIGURE_PANELS_JS + ")([f, sel])", STAGE_IMAGE)
        if not got.get("retry"):  # a repaint replaced the image while it was read
            break
        if time.monotonic() > deadline:
            break
    assert "error" not in got, (fig, got["error"])
    return got


def stage_shapes(widget: Any) -> dict[str, tuple[int, int]]:
    """``{figure class: (rows, cols) of each panel}`` from the summary line: scores and
    weights are seq_len x seq_len, head outputs seq_len x d_head."""
    v = summary_values(widget)
    seq, d_head = int(v["seq_len"]), int(v["d_model"]) // int(v["n_heads"])
    return {".aw-fig-scores": (seq, seq), ".aw-fig-weights": (seq, seq),
            ".aw-fig-outputs": (seq, d_head)}  # fmt: skip


def _titles_in_place(got: dict[str, Any]) -> bool:
    """Whether every title's box ends just above its panel (the check of :func:`check_panels`)."""
    scr, panels = got["screen"], got["panels"]
    if len(got["titles"]) != len(panels) or not panels:
        return False
    cell_h = (scr["bottom"] - scr["top"]) / got["height"]
    ordered = sorted(got["titles"], key=lambda t: (round(t["bottom"]), t["left"]))
    return all(scr["top"] + p["y"] * cell_h - 3 * cell_h - 16 <= t["bottom"]
               <= scr["top"] + p["y"] * cell_h + 1 for p, t in zip(panels, ordered, strict=True))


def check_panels(widget: Any, fig: str, n_panels: int, title: str = "head") -> dict[str, Any]:
    """Assert that ``fig``'s image holds exactly ``n_panels`` solid panels of the shape the
    summary implies, whose titles read ``"<title> 0" .. "<title> n-1"`` (in that order) and
    sit just above their panels.

    The titles are a separate bqplot mark: after the figure is resized (a new layout), they
    can be redrawn a moment after the image, so their position is polled for a few seconds
    before it is asserted."""
    deadline = time.monotonic() + 5
    while True:
        got = figure_panels(widget, fig)
        if _titles_in_place(got) or time.monotonic() > deadline:
            break
        widget.page.wait_for_timeout(200)
    shape = stage_shapes(widget)[fig]
    panels, titles = got["panels"], got["titles"]
    assert got["href"].startswith(DATA_PNG), (fig, got["href"][:60])
    assert got["partial"] == 0, (fig, "half-transparent pixels", got["partial"])
    assert len(panels) == n_panels, (fig, f"{len(panels)} panels in the image, expected "
                                     f"{n_panels}", [(p["x"], p["y"], p["w"], p["h"])
                                                     for p in panels])
    assert all(p["holes"] == 0 for p in panels), (fig, "panels are not solid rectangles")
    assert all((p["h"], p["w"]) == shape for p in panels), (
        fig, f"panels should be {shape}", [(p["h"], p["w"]) for p in panels])
    assert len(titles) == n_panels, (fig, [t["text"] for t in titles])
    scr = got["screen"]
    cell_w = (scr["right"] - scr["left"]) / got["width"]
    cell_h = (scr["bottom"] - scr["top"]) / got["height"]
    # titles in reading order (rows of panels top to bottom, then left to right)
    ordered = sorted(titles, key=lambda t: (round(t["bottom"]), t["left"]))
    for i, (p, t) in enumerate(zip(panels, ordered, strict=True)):
        assert re.match(rf"{title} {i}(\s|$)", t["text"]), (fig, i, [t["text"] for t in ordered])
        left = scr["left"] + p["x"] * cell_w
        top = scr["top"] + p["y"] * cell_h
        assert abs(t["left"] - left) <= max(2.0, 0.5 * cell_w), (fig, i, "title x", t, left)
        assert top - 3 * cell_h - 16 <= t["bottom"] <= top + 1, (fig, i, "title y", t, top)
    return got


def check_column_labels(widget: Any, fig: str, n_labels: int) -> None:
    """Assert that ``fig`` (a square figure with narrow columns: upright labels) shows
    ``n_labels`` column labels on its top axis, all above the axis line and none overlapping
    the next, and that its panel titles sit below that line (bqplot rotates a label about the
    tick, which once hung long labels below the axis, over the titles)."""
    got = widget.locator(fig).first.evaluate("""fig => {
        const box = e => { const r = e.getBoundingClientRect();
                           return {text: e.textContent, top: r.top, bottom: r.bottom,
                                   left: r.left, right: r.right}; };
        const axes = [...fig.querySelectorAll('.domain')]
            .map(d => ({g: d.parentElement, r: d.getBoundingClientRect()}))
            .filter(a => a.r.width > a.r.height).sort((a, b) => a.r.top - b.r.top);
        const top = axes[0];
        return {line: top.r.bottom,
                labels: [...top.g.querySelectorAll('.tick text')].filter(t => t.textContent)
                    .map(box),
                titles: [...fig.querySelectorAll('.object_grp text')].filter(t => t.textContent)
                    .map(box)};
    }""")
    labels = sorted(got["labels"], key=lambda b: b["left"])
    assert len(labels) == n_labels, (fig, [b["text"] for b in labels])
    assert all(b["bottom"] <= got["line"] + 0.5 for b in labels), (fig, got["line"], labels)
    for a, b in itertools.pairwise(labels):
        assert a["right"] <= b["left"] + 1, (fig, "labels overlap", a, b)
    assert got["titles"] and all(t["top"] >= got["line"] - 0.5 for t in got["titles"]), (
        fig, got["line"], got["titles"])


def stage_colors(widget: Any) -> dict[str, list[list[list[int]]]]:
    """``{figure class: [cell colours of each panel (rows of 0xRRGGBB)]}`` read from the
    decoded image of each of scores, weights and head outputs."""
    return {fig: [p["colors"] for p in figure_panels(widget, fig)["panels"]]
            for fig in STAGE_FIGS}


def slider(widget: Any, name: str) -> Any:
    """The ipywidgets slider with class ``aw-<name>`` inside ``widget``."""
    return widget.locator(f".aw-{name}").first


PAGE_1280X720 = {"width": 1280, "height": 720}  # a projector's page: the documented pictures


def page_screenshot(page: Any, name: str, top: Any = None) -> Path:
    """The page at 1280 x 720, scrolled so that ``top`` (a locator) starts at the top, saved
    to ``build/screenshots/<name>.png``.  With ``AW_UPDATE_SCREENSHOT`` set, also to
    ``docs/screenshots/<name>.png`` as a palette PNG (small; refreshed on purpose only)."""
    if page.viewport_size != PAGE_1280X720:
        page.set_viewport_size(PAGE_1280X720)
        page.wait_for_timeout(700)  # let bqplot relayout after the resize
    open_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if open_tab.count():  # JupyterLab: the file browser folded away, the notebook page-wide
        open_tab.first.click()
        page.wait_for_timeout(700)
    if top is not None:
        top.first.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
    page.mouse.move(0, 0)  # no hover tooltip or highlight left in the picture
    page.wait_for_timeout(200)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("AW_UPDATE_SCREENSHOT"):
        from PIL import Image

        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
                docs / f"{name}.png", optimize=True)
    return path


def full_screenshot(page: Any, target: Any, name: str, until: Any = None) -> Path:
    """Screenshot ``target`` whole, or from its top to the bottom of ``until`` (a locator
    inside it).  The viewport is grown to fit it first, because bqplot figures below the fold
    are not laid out (they would come out blank); JupyterLab's chrome needs the extra room."""
    box = target.bounding_box()
    assert box is not None, "nothing to screenshot"
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(box["height"]) + 400})
    try:
        target.scroll_into_view_if_needed()
        page.wait_for_timeout(700)  # let bqplot relayout after the resize
        if until is None:
            return screenshot(page, target, name)
        top, bottom = target.bounding_box(), until.bounding_box()
        assert top is not None and bottom is not None
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        clip = {"x": top["x"], "y": top["y"], "width": top["width"],
                "height": bottom["y"] + bottom["height"] - top["y"] + 8}  # fmt: skip
        page.screenshot(path=str(path), clip=clip)
        return path
    finally:
        page.set_viewport_size(VIEWPORT)


def _diff(a: dict[str, list], b: dict[str, list]) -> dict[str, list]:
    """Per figure, the indices of the panels that differ (for failure messages)."""
    out: dict[str, list] = {}
    for fig in a:
        other = b.get(fig, [])
        out[fig] = [i for i, (x, y) in enumerate(zip(a[fig], other, strict=False)) if x != y]
        if len(a[fig]) != len(other):
            out[fig].append(f"count {len(a[fig])} != {len(other)}")
    return out


def _all_changed(new: dict[str, list], old: dict[str, list]) -> None:
    for fig, grids in new.items():
        for i, grid in enumerate(grids[: len(old[fig])]):
            assert grid != old[fig][i], f"{fig} panel {i} did not change"


def check_focus_hover(page: Any, widget: Any) -> None:
    """Hovering a cell of the focus panel names that cell's query and key tokens.

    The focus figure's image is the panel (one pixel a cell, square cells) below its
    transparent title rows (as many as its title needs); the pointer goes to the centre of
    cell (row, column) and the readout must name exactly that query and key.
    """
    from attention_widget import tokenize

    tokens = tokenize(TOUR_TEXT)
    n = len(tokens)
    image = widget.locator(".aw-fig-focus image").first
    image.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = image.bounding_box()
    assert box is not None
    title_rows = round(box["height"] * n / box["width"]) - n  # above the panel
    assert title_rows in (1, 2), box
    cell_w, cell_h = box["width"] / n, box["height"] / (n + title_rows)
    readout = widget.locator(".aw-hover").first
    for row, col in [(0, 0), (3, 1), (7, 2), (n - 1, n - 1), (2, 9)]:
        page.mouse.move(box["x"] + (col + 0.5) * cell_w,
                        box["y"] + (row + title_rows + 0.5) * cell_h)
        expected = f"query {tokens[row]} ({row}) → key {tokens[col]} ({col})"
        deadline = time.monotonic() + 10
        while expected not in readout.inner_text():
            assert time.monotonic() < deadline, (expected, readout.inner_text())
            page.wait_for_timeout(50)
    page.mouse.move(0, 0)


def fresh_colors_in_new_cell(page: Any) -> Any:
    """For :func:`exercise_tour_widget` in JupyterLab and Notebook 7: a function that makes
    a new widget in a new cell, from the exact values the tour's widget ``w`` holds (after
    checking that they are the ones expected), and returns its :func:`stage_colors`."""
    counter = itertools.count()

    def fresh_colors(values: dict) -> dict:
        cls = f"aw-reference-{next(counter)}"
        lab_append_cell_and_run(
            page,
            "ref = AttentionWidget(text=w.text, d_model=w.d_model, n_heads=w.n_heads, "
            "n_kv_heads=w.n_kv_heads, temperature=w.temperature, mask=w.mask, "
            "view='detailed')\n"
            f"assert (w.d_model, w.n_heads) == ({values['d_model']}, {values['n_heads']})\n"
            f"assert abs(w.temperature - {values['temperature']!r}) < 1e-9\n"
            f"ref.add_class({cls!r})\n"
            "ref",
        )
        ref = page.locator(f".{cls}").first
        ref.wait_for(timeout=30000)
        wait_summary(page, ref, {"n_heads": str(values["n_heads"])})
        return stage_colors(ref)

    return fresh_colors


# JS: per figure (by stage name), the tick texts of its x and y axes (not the colour bar) in
# DOM order, and its panel titles, as the page shows them (SVG text has no innerText)
SHOWN_AXES_JS = """root => Object.fromEntries([...root.querySelectorAll('.aw-figure')].map(fig => {
    const name = [...fig.classList].find(c => c.startsWith('aw-fig-')).slice(7);
    const out = {x: null, y: null, titles: []};
    for (const g of fig.querySelectorAll('g.axis')) {
        if (g.closest('[id^=colorBarG]')) continue;
        const d = g.querySelector(':scope > .domain');
        if (!d) continue;
        const r = d.getBoundingClientRect();
        out[r.height > r.width ? 'y' : 'x'] =
            [...g.querySelectorAll(':scope > .tick text')].map(t => t.textContent);
    }
    out.titles = [...fig.querySelectorAll('text.label')].map(t => t.textContent).filter(t => t);
    return [name, out];
}))"""


def shown_axes(widget: Any) -> dict[str, dict[str, list[str] | None]]:
    """``{stage: {"x": tick texts, "y": tick texts, "titles": panel titles}}`` on the page."""
    return widget.evaluate(SHOWN_AXES_JS)


def x_row_labels(widget: Any) -> list[str]:
    """The row labels of the X figure (its left axis), as the page shows them."""
    return shown_axes(widget)["x"]["y"]


def exercise_tour_widget(
    page: Any,
    log: PageLog,
    widget: Any,
    fresh_colors: Any,
    shot_prefix: str,
    keyboard: bool = True,
) -> dict[str, Path]:
    """Everything the tour's widget must do in a browser: Lab, Notebook 7, Voila.

    Parameters
    ----------
    page, log : from :func:`new_page`
    widget : locator of the tour's ``.attention-widget`` (freshly rendered, initial state)
    fresh_colors : callable(dict of d_model, n_heads, temperature) -> :func:`stage_colors` of
        a *new* widget rendered with the values the tour's widget holds now
    shot_prefix : screenshot file name prefix ("lab" / "notebook7" / "voila")
    keyboard : bool
        Move the sliders of the second round with arrow keys (True) or with the mouse again.
        Notebook 7 takes the arrow keys of every ipywidgets slider for its own shortcuts
        (see ``test_browser_notebook.py``).

    Returns
    -------
    dict of str to Path
        The screenshots taken.
    """
    from attention_widget import tokenize

    shots: dict[str, Path] = {}
    widget.wait_for(timeout=60000)
    wait_summary(page, widget, TOUR_INITIAL)
    # the overview first (the default view), then the detailed view, one click away
    widget.locator(".aw-overview image").first.wait_for(timeout=30000)
    shots["overview"] = screenshot(page, widget, f"{shot_prefix}_tour_overview")
    show_view(page, widget, "detailed")
    for fig, images in stage_hrefs(widget).items():  # one Image mark per stage figure
        assert len(images) == 1 and images[0].startswith(DATA_PNG), (fig, [i[:60] for i in images])
    for fig in STAGE_FIGS:  # contract: one heatmap panel per head, titled "head i"
        check_panels(widget, fig, 4)
    for fig in (".aw-fig-scores", ".aw-fig-weights"):  # every token labels its key column
        check_column_labels(widget, fig, 4 * int(TOUR_INITIAL["seq_len"]))
    before = stage_colors(widget)
    shots["initial"] = full_screenshot(page, widget, f"{shot_prefix}_tour_initial")
    shots["readme"] = full_screenshot(
        page, widget, f"{shot_prefix}_tour_top", until=widget.locator(".aw-stage-4").first
    )
    check_focus_hover(page, widget)

    # --- mouse: drag each handle along its track -----------------------------------------
    heads64 = [1, 2, 4, 8, 16, 32, 64]
    drag_slider(page, slider(widget, "n_heads"), heads64.index(8) / (len(heads64) - 1))
    wait_summary(page, widget, {"n_heads": "8"})
    drag_slider(page, slider(widget, "temperature"), 1.0)  # to the right end: 10**1.3
    wait_summary(page, widget, {"temperature": f"{10**1.3:.3g}"})
    drag_slider(page, slider(widget, "d_model"), D_MODEL_OPTIONS.index(32) / 13)
    mouse_state = {"d_model": "32", "n_heads": "8", "n_kv_heads": "8",
                   "temperature": f"{10**1.3:.3g}", "seq_len": "12"}  # fmt: skip
    wait_summary(page, widget, mouse_state)
    for fig in STAGE_FIGS:
        check_panels(widget, fig, 8)
    after_mouse = stage_colors(widget)
    _all_changed(after_mouse, before)
    fresh = fresh_colors({"d_model": 32, "n_heads": 8, "temperature": 10**1.3})
    assert fresh == after_mouse, ("after mouse drags the heatmaps differ from a fresh render",
                                  _diff(fresh, after_mouse))

    # --- keyboard: focus the handle, arrow keys (or the mouse once more) ----------------
    if keyboard:
        press_slider(page, slider(widget, "d_model"), "ArrowRight", 2)  # 32 -> 48 -> 64
    else:
        drag_slider(page, slider(widget, "d_model"), D_MODEL_OPTIONS.index(64) / 13)
    wait_summary(page, widget, {"d_model": "64", "n_heads": "8"})
    if keyboard:
        press_slider(page, slider(widget, "n_heads"), "ArrowRight", 1)  # 8 -> 16
    else:
        drag_slider(page, slider(widget, "n_heads"), heads64.index(16) / (len(heads64) - 1))
    wait_summary(page, widget, {"n_heads": "16"})
    if keyboard:
        press_slider(page, slider(widget, "temperature"), "ArrowLeft", 30)  # 10**(1.3 - 0.3)
        temperature = 10.0
    else:
        drag_slider(page, slider(widget, "temperature"), 0.0)  # to the left end: 10**-1.3
        temperature = 10**-1.3
    key_state = {"d_model": "64", "n_heads": "16", "n_kv_heads": "16",
                 "temperature": f"{temperature:.3g}", "seq_len": "12", "mask": "none"}  # fmt: skip
    wait_summary(page, widget, key_state)
    for fig in STAGE_FIGS:
        check_panels(widget, fig, 16)
    after_keys = stage_colors(widget)
    _all_changed(after_keys, after_mouse)
    fresh = fresh_colors({"d_model": 64, "n_heads": 16, "temperature": temperature})
    assert fresh == after_keys, ("after the second round the heatmaps differ from a fresh render",
                                 _diff(fresh, after_keys))
    shots["keyboard"] = full_screenshot(page, widget, f"{shot_prefix}_tour_after_keys")

    # --- new text, typed key by key (no notebook shortcut may take a key) ----------------
    text_input = widget.locator(".aw-text input").first

    def type_text(text: str) -> list[str]:
        """Type ``text`` into the widget's text box, press Enter; check the token strip and
        X's row labels; return those labels."""
        text_input.scroll_into_view_if_needed()
        text_input.fill("")
        text_input.press_sequentially(text)
        text_input.press("Enter")
        tokens = tokenize(text)
        wait_summary(page, widget, {"seq_len": str(len(tokens))})
        strip = widget.locator(".aw-tokens .aw-token").all_inner_texts()
        assert strip == tokens, strip
        rows = x_row_labels(widget)
        # the tokens label the rows of X as plain text, in order: every one, or every k-th
        # where the rows are too close for all
        assert rows and any(rows == tokens[::k] for k in range(1, len(tokens) + 1)), rows
        return rows

    # 25 words, then the 31 tokens below: bqplot once kept the old labels on the moved ticks
    type_text(" ".join(f"w{i}" for i in range(25)))
    # --- hostile text: shown as text, never run ------------------------------------------
    rows = type_text(XSS_TEXT)
    assert "<" in rows, rows
    assert log.dialogs == [], log.dialogs
    hostile = page.evaluate(
        """() => ({
            pwned: window.__pw !== undefined,
            imgs: document.querySelectorAll('img[src="x"], svg[onload]').length,
            scripts: [...document.querySelectorAll('script')].filter(
                s => s.textContent.includes('alert(2)')).length,
        })"""
    )
    assert hostile == {"pwned": False, "imgs": 0, "scripts": 0}, hostile
    shots["xss"] = full_screenshot(page, widget, f"{shot_prefix}_tour_hostile_text")

    assert log.dialogs == [], log.dialogs
    assert log.real_errors() == [], log.real_errors()
    return shots


# ------------------------------------------------------------------------------------------
# the widget's text, measured: every SVG text and every HTML text run on screen
# ------------------------------------------------------------------------------------------
# JS: the screen box of every visible text of the widget.  SVG: each non-empty <text>, with
# the box of the <svg> (its figure) around it.  HTML: each non-blank text node, its own box
# (a Range around it, not its element's), and whether its element cuts it (scrollWidth beyond
# clientWidth: an ellipsis or a clip).  Native <select> boxes draw their text themselves.
TEXT_BOXES_JS = """root => {
    const out = [];
    const box = r => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom,
                       width: r.width, height: r.height});
    const shown = el => {
        for (let e = el; e && e !== root.parentElement; e = e.parentElement) {
            const s = getComputedStyle(e);
            if (s.display === 'none' || s.visibility === 'hidden' || Number(s.opacity) === 0)
                return false;
        }
        return true;
    };
    for (const t of root.querySelectorAll('svg text')) {
        const text = t.textContent.trim();
        const r = t.getBoundingClientRect();
        if (!text || r.width === 0 || !shown(t)) continue;
        let svg = t.ownerSVGElement;  // the figure: the outermost <svg>
        while (svg.parentElement && svg.parentElement.closest('svg'))
            svg = svg.parentElement.closest('svg');
        // slanted axis labels: their boxes overlap where their glyphs do not (spacing along
        // the axis is check_column_labels' job)
        const turned = /rotate[(](?!0)/.test(t.getAttribute('transform') || '') ||
            /rotate[(](?!0)/.test(t.parentElement.getAttribute('transform') || '');
        out.push({kind: 'svg', text, turned, size: parseFloat(getComputedStyle(t).fontSize),
                  cls: (t.getAttribute('class') || ''), ...box(r),
                  fig: box(svg.getBoundingClientRect())});
    }
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const el = n.parentElement;
        if (!n.textContent.trim() || !el || el.closest('svg, select, option, style, script'))
            continue;
        if (!shown(el)) continue;
        const range = document.createRange();
        range.selectNodeContents(n);
        const rects = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
        if (!rects.length) continue;
        const cut = el.scrollWidth > el.clientWidth + 1 &&
            ['hidden', 'clip'].includes(getComputedStyle(el).overflowX);
        for (const r of rects)
            out.push({kind: 'html', text: n.textContent.trim(), cut, ...box(r),
                      size: parseFloat(getComputedStyle(el).fontSize)});
    }
    return out;
}"""


def text_boxes(widget: Any) -> list[dict[str, Any]]:
    """Every visible text of ``widget`` with its screen box (see :data:`TEXT_BOXES_JS`)."""
    return widget.evaluate(TEXT_BOXES_JS)


def text_problems(widget: Any, tolerance: float = 1.0, page: Any = None) -> list[str]:
    """Texts of ``widget`` that overlap another, stick out of their figure, or are cut.

    Two boxes overlap when they share more than ``tolerance`` px in both directions.  With
    ``page``, the viewport first grows to hold the whole widget (figures below the fold are
    not laid out), and is put back after.
    """
    if page is not None:
        size = page.viewport_size
        box = widget.bounding_box()
        page.set_viewport_size({"width": size["width"],
                                "height": max(size["height"], int(box["height"]) + 200)})
        widget.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)  # bqplot lays the figures out again
    try:
        boxes = text_boxes(widget)
    finally:
        if page is not None:
            page.set_viewport_size(size)
    problems = []
    for b in boxes:
        if b["kind"] == "svg":
            f = b["fig"]
            if (b["left"] < f["left"] - tolerance or b["right"] > f["right"] + tolerance
                    or b["top"] < f["top"] - tolerance
                    or b["bottom"] > f["bottom"] + tolerance):
                problems.append(f"clipped by its figure: {b['text']!r}")
        elif b["cut"]:
            problems.append(f"cut: {b['text']!r}")
    for a, b in itertools.combinations(boxes, 2):
        if a.get("turned") or b.get("turned"):
            continue
        dx = min(a["right"], b["right"]) - max(a["left"], b["left"])
        dy = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
        if dx > tolerance and dy > tolerance:
            problems.append(f"overlap: {a['text']!r} / {b['text']!r} ({dx:.0f} x {dy:.0f} px)")
    return problems


# JS: the widget's size, and whether the page (or JupyterLab's notebook) scrolls sideways
FIT_JS = """root => {
    const r = root.getBoundingClientRect();
    const sideways = [document.documentElement, document.body,
                      ...document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook,'
                                                   + ' .jp-OutputArea-output')]
        .some(e => e.scrollWidth > e.clientWidth + 1);
    return {width: r.width, height: r.height, right: r.right,
            viewport: document.documentElement.clientWidth, sideways};
}"""


def widget_fit(widget: Any) -> dict[str, Any]:
    """``{width, height, right, viewport, sideways}`` of the widget on the page."""
    return widget.evaluate(FIT_JS)
