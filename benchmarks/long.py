"""Benchmark long prompts: the block-wise path of ``attention_widget.long`` by length.

Run ``python benchmarks/long.py`` alone on the machine.  For d_model 512, 8 heads and a causal
mask it prints, per length:

* ``first``: the first full computation in a fresh process (512 tokens: the full trace of
  ``multi_head_attention``, the old path; longer: ``long_attention`` in float32);
* ``step``: a temperature step (``with_temperature`` / ``long_with_temperature``), median;
* ``zoom``: the exact weights of a 64 x 64 block with its 64 + 64 token labels, median;
* ``lens``: one query's full row of weights and its ten heaviest keys with labels, median;
* ``head``: ``head_weights(h)``, one head's exact (n, n) weights (above 16,384 tokens into a
  ``numpy.memmap`` on disk: 4 GiB in float32 is over the memory limit);
* ``RSS``: the process's peak resident memory (VmHWM) after first, step, zoom and lens, and
  after ``head`` too;
* ``gap``: the longest time between two progress reports of the first computation;
* ``cancel``: from setting the cancel token of a running temperature step to its
  ``AttentionCancelled``.

Each length runs in its own process, so that each peak memory is its own.  ``--threshold``
adds a table of the full trace against the block-wise path from 256 to 4,096 tokens.  The
machine's load (``os.getloadavg()``) is printed before and after: on a busy machine every
figure moves.

``--widget`` times the same lengths through ``AttentionWidget`` (its text source, the same
sizes), in the kernel with no browser: what a user waits for.

* ``first``: the constructor until the first diagram is drawn (``w.wait()``; a long trace is
  computed in a worker thread);
* ``step``: ``w.temperature = t`` until the step is drawn, median of 3;
* ``zoom``, ``lens``: ``w.zoom(...)`` on 64 x 64 cells and ``w.query = i`` (the last query),
  drawn, median of 5 (at 512 tokens: a query's focus row and its output);
* ``bytes/step``: what the comm sends to the browser for one temperature step (JSON and
  buffers, as ``tests/support/comm.py`` records them);
* ``RSS``: the process's peak resident memory.

The step in a real browser is ``benchmarks/browser.py --long``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial

import numpy as np

D_MODEL, N_HEADS = 512, 8
SIZES = (512, 2048, 8192, 32768)
TEMPERATURES = (0.5, 2.0, 1.3)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cancel_latency(step, wait: float) -> float:
    """Seconds from setting the token of a running ``step(cancel=...)`` to its exception."""
    from attention_widget.long import AttentionCancelled

    token, done, outcome = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            step(cancel=token)
            outcome.append("finished")
        except AttentionCancelled:
            outcome.append(time.perf_counter())
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(wait)
    t0 = time.perf_counter()
    token.set()
    done.wait()
    worker.join()
    return float("nan") if outcome[0] == "finished" else outcome[0] - t0


def one_size(seq_len: int) -> dict:
    """Every figure of one length, in this process."""
    from attention_widget import embed, init_params, multi_head_attention, with_temperature
    from attention_widget.long import (
        LONG_THRESHOLD,
        long_attention,
        long_with_temperature,
    )

    tokens = [f"w{i % 997}" for i in range(seq_len)]
    x = embed(tokens, D_MODEL)
    params = init_params(D_MODEL, N_HEADS, seed=0)
    h, rows, cols, query = 3, slice(seq_len // 2, seq_len // 2 + 64), slice(0, 64), seq_len - 1
    result = {"tokens": seq_len}
    if seq_len <= LONG_THRESHOLD:
        result["path"] = "full (old)"
        t0 = time.perf_counter()
        trace = multi_head_attention(x, params, n_heads=N_HEADS, mask="causal")
        result["first"] = time.perf_counter() - t0
        result["step"] = median_seconds(
            lambda: with_temperature(trace, params, TEMPERATURES[0]), 3)
        zoom = lambda: (trace.weights[h, rows, cols], tokens[rows], tokens[cols])  # noqa: E731

        def lens():
            row = trace.weights[h, query]
            top = np.argsort(-row, kind="stable")[:10]
            return row, [(int(i), tokens[i], float(row[i])) for i in top]

        head = lambda: trace.weights[h].copy()  # noqa: E731
    else:
        result["path"] = "long, float32"
        reports = []
        t0 = time.perf_counter()
        trace = long_attention(x, params, n_heads=N_HEADS, mask="causal",
                               progress=lambda f, m: reports.append(time.perf_counter()))
        result["first"] = time.perf_counter() - t0
        result["gap"] = max(np.diff([t0, *reports]))
        steps = 1 if seq_len > 16384 else 3
        result["step"] = median_seconds(
            lambda: long_with_temperature(trace, params, TEMPERATURES[0]), steps)
        zoom = lambda: (trace.block(h, rows, cols), tokens[rows], tokens[cols])  # noqa: E731

        def lens():
            keys, weights = trace.top_keys(h, query, k=10)
            listed = [(int(i), tokens[i], float(w)) for i, w in zip(keys, weights, strict=True)]
            return trace.row(h, query), listed

        def head():
            if seq_len <= 16384:
                return trace.head_weights(h)
            with tempfile.TemporaryDirectory() as folder:
                out = np.lib.format.open_memmap(os.path.join(folder, "head.npy"), "w+",
                                                np.float32, (seq_len, seq_len))
                trace.head_weights(h, out=out)
                out.flush()
                del out

        step = lambda cancel: long_with_temperature(trace, params, 0.7, cancel=cancel)  # noqa: E731
        result["cancel"] = cancel_latency(step, wait=min(1.0, result["step"] / 3))
    result["zoom"] = median_seconds(zoom, 5)
    result["lens"] = median_seconds(lens, 5)
    result["rss"] = peak_rss_mib()
    result["head"] = median_seconds(head, 1)
    result["rss_head"] = peak_rss_mib()
    return result


def threshold_table() -> None:
    """Full trace (float64) against the block-wise path (float32) around the threshold.

    Best of three calls each, and the peak memory a call allocates (tracemalloc).
    """
    import tracemalloc

    from attention_widget import embed, init_params, multi_head_attention
    from attention_widget.long import long_attention

    params = init_params(D_MODEL, N_HEADS, seed=0)
    print("| tokens | full: s | full: MiB | long: s | long: MiB |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for seq_len in (256, 512, 1024, 2048, 4096):
        x = embed([f"w{i % 997}" for i in range(seq_len)], D_MODEL)
        cells = []
        for fn in (multi_head_attention, long_attention):
            call = partial(fn, x, params, n_heads=N_HEADS, mask="causal")
            call()
            best = min(median_seconds(call, 1) for _ in range(3))
            tracemalloc.start()
            call()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            cells += [f"{best:.3f}", f"{peak / 2**20:.0f}"]
        print(f"| {seq_len:,} | " + " | ".join(cells) + " |", flush=True)


def one_widget(seq_len: int) -> dict:
    """The widget's figures at one length, in this process (see the module docstring)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from support.comm import record_comm_messages

    from attention_widget import AttentionWidget

    text = " ".join(f"w{i % 997}" for i in range(seq_len))
    result = {"tokens": seq_len}
    with record_comm_messages() as sent:
        t0 = time.perf_counter()
        w = AttentionWidget(text, d_model=D_MODEL, n_heads=N_HEADS, mask="causal")
        w.wait()
        result["first"] = time.perf_counter() - t0
        result["path"] = type(w.trace).__name__
        steps = iter(TEMPERATURES * 3)

        def step() -> None:
            w.temperature = next(steps)
            w.wait()

        step()
        sent.clear()
        step()
        result["bytes"] = sent.total_bytes
        result["step"] = median_seconds(step, 1 if seq_len > 16384 else 3)
        if seq_len > 512:  # each zoom a new box: queries in the middle, keys moving along
            keys = iter(range(0, seq_len // 2, 64))

            def zoom() -> None:
                start = next(keys)
                w.zoom((seq_len // 2, seq_len // 2 + 64), (start, start + 64))

            result["zoom"] = median_seconds(zoom, 5)
        queries = iter([seq_len - 1, seq_len - 2] * 5)
        result["lens"] = median_seconds(lambda: setattr(w, "query", next(queries)), 5)
    result["rss"] = peak_rss_mib()
    return result


def widget_row(r: dict) -> str:
    zoom = f"{r['zoom'] * 1e3:7.0f}" if "zoom" in r else "      -"
    return (f"| {r['tokens']:>6,} | {r['path']:<14} | {r['first']:7.2f} | {r['step']:7.2f} | "
            f"{zoom} | {r['lens'] * 1e3:7.0f} | {r['bytes'] / 2**10:8.0f} | {r['rss']:7.0f} |")


def row(r: dict) -> str:
    gap = f"{r['gap']:6.2f}" if "gap" in r else "     -"
    cancel = f"{r['cancel']:6.2f}" if "cancel" in r else "     -"
    return (
        f"| {r['tokens']:>6,} | {r['path']:<13} | {r['first']:7.2f} | {r['step']:7.2f} | "
        f"{r['zoom'] * 1e3:7.1f} | {r['lens'] * 1e3:7.1f} | {r['head']:7.2f} | "
        f"{r['rss']:7.0f} | {r['rss_head']:7.0f} | {gap} | {cancel} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--threshold", action="store_true",
                        help="also compare the full trace and the block-wise path by length")
    parser.add_argument("--widget", action="store_true",
                        help="time the widget (first diagram, step, zoom, lens, bytes, RSS)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_widget(args.one) if args.widget else one_size(args.one)))
        return
    import numpy

    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
          f"NumPy {numpy.__version__}")
    print(f"d_model {D_MODEL}, {N_HEADS} heads, causal mask; load before: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.widget:
        print("| tokens | trace          |   first |    step | zoom ms | lens ms | KiB/step | "
              "RSS MiB |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in args.sizes:
            child = subprocess.run([sys.executable, __file__, "--widget", "--one", str(size)],
                                   check=True, capture_output=True, text=True)
            print(widget_row(json.loads(child.stdout.splitlines()[-1])), flush=True)
        print(f"load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}  (times in "
              "seconds unless marked, each until drawn)")
        return
    print("| tokens | path          |   first |    step | zoom ms | lens ms |    head | "
          "RSS MiB | +head   |    gap | cancel |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size)], check=True,
                               capture_output=True, text=True)
        print(row(json.loads(child.stdout.splitlines()[-1])), flush=True)
    print(f"load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}  (times in seconds "
          "unless marked; gap: longest time between progress reports of the first run)")
    if args.threshold:
        threshold_table()
        print(f"load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
