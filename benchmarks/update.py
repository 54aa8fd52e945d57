"""Kernel-side cost of one control change, against ipywidgets.interact + matplotlib.

Run: python benchmarks/update.py              (both views, in one run)
     python benchmarks/update.py --view detailed

For seq_len 64, d_model 256, 8 heads it measures, in one run:
- ours: setting ``temperature`` (and ``n_heads``) on an AttentionWidget, including the
  serialization of every message the change sends (recorded through a comm that keeps the JSON
  and the binary buffers);
- the baseline a teacher would otherwise write: ``ipywidgets.interactive`` around a function
  that recomputes attention and draws the same heads' weights and outputs with matplotlib,
  rendered to PNG as the inline backend does;
- bytes sent versus the float32 payload of what changed;
- the same temperature change at seq_len 512 (goal: < 1 s);
- each for the overview (the default view) and the detailed view, in the same run, so that
  the two compare on the same machine under the same load (``--view`` picks one);
- what a new widget sends (widget models opened and updates): the kernel's output channel
  carries them all within a fraction of a second, and a notebook that shows several widgets
  at once must not send more than reaches the browser.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import ipywidgets as W
import matplotlib.pyplot as plt

from attention_widget import (
    AttentionWidget,
    embed,
    init_params,
    multi_head_attention,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.comm import record_comm_messages

SEQ, D_MODEL, HEADS = 64, 256, 8
TOKENS = [f"w{i % 40}" for i in range(SEQ)]
TEMPS = [0.5, 0.7, 1.0, 1.4, 2.0, 3.0]


def median_time(fn, values, repeat=3):
    times = []
    for _ in range(repeat):
        for v in values:
            t0 = time.perf_counter()
            fn(v)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline_frame_s() -> float:
    x = embed(TOKENS, D_MODEL)
    params = init_params(D_MODEL, HEADS)

    def draw(temperature=1.0):
        tr = multi_head_attention(x, params, n_heads=HEADS, temperature=temperature)
        fig, axes = plt.subplots(2, HEADS, figsize=(2 * HEADS, 4.5))
        for h in range(HEADS):
            axes[0, h].imshow(tr.weights[h], vmin=0, vmax=1, cmap="viridis")
            axes[0, h].set_title(f"head {h}")
            axes[1, h].imshow(tr.head_outputs[h], cmap="RdBu_r")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")  # what the inline backend sends
        plt.close(fig)

    ui = W.interactive(draw, temperature=W.FloatLogSlider(value=1.0, min=-1.3, max=1.3))
    slider = ui.children[0]

    def step(t):
        slider.value = t  # interactive calls draw() inside its Output widget

    step(0.9)
    return median_time(step, TEMPS, repeat=1)


def ours(seq: int, name: str, values, view: str = "overview") -> tuple[float, int, int]:
    """Median seconds per change, bytes sent and float32 payload of the last change.

    ``values`` should not repeat within two steps: each figure alternates between two image
    buffers, and a buffer that already holds the new picture is shown again without resending
    it (correct, but it would make the byte count meaningless).
    """
    tokens = [f"w{i % 40}" for i in range(seq)]
    with record_comm_messages() as rec:
        w = AttentionWidget(" ".join(tokens), d_model=D_MODEL, n_heads=HEADS, view=view)
        setattr(w, name, values[-1])

        def step(v):
            rec.clear()
            setattr(w, name, v)

        t = median_time(step, values)
        tr = w.trace
        if name == "temperature":  # what a temperature change changes
            arrays = [tr.weights, tr.head_outputs, tr.concat, tr.output,
                      tr.weights[w.head]]  # the focus panel shows one head again
        else:
            arrays = [tr.scores, tr.weights, tr.head_outputs, tr.concat, tr.output,
                      tr.weights[w.head]]
        payload = sum(4 * a.size for a in arrays)
        return t, rec.total_bytes, payload


def created(view: str) -> tuple[float, int, int]:
    """Seconds to make a widget of a sentence, widget models opened, updates sent."""
    with record_comm_messages() as rec:
        t0 = time.perf_counter()
        AttentionWidget("The cat sat on the mat because the cat was tired.", view=view)
        t = time.perf_counter() - t0
    opened = sum(kind == "comm_open" for kind, _, _ in rec.messages)
    return t, opened, len(rec.messages) - opened


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--view", choices=["overview", "detailed", "both"], default="both",
                    help="the view drawn (both: one after the other, in the same run)")
    args = ap.parse_args(argv)
    views = ["overview", "detailed"] if args.view == "both" else [args.view]
    load = os.getloadavg()
    base = baseline_frame_s()
    print(f"seq_len={SEQ}, d_model={D_MODEL}, n_heads={HEADS}; load average before "
          f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {os.cpu_count()} cores")
    print(f"baseline  interact + matplotlib, 8 heads x (weights, outputs): {base * 1e3:8.1f} ms")
    rows = [("temperature", SEQ, TEMPS), ("n_heads", SEQ, [4, 8, 2])]
    for view in views:
        for name, seq, values in rows:
            t, sent, payload = ours(seq, name, values, view)
            print(f"{view:<9} {name:<12} full diagram: {t * 1e3:8.2f} ms   speed-up "
                  f"{base / t:6.1f}x   sent {sent / 1e3:8.1f} kB / float32 payload "
                  f"{payload / 1e3:8.1f} kB = {sent / payload:.2f}x")
        t, sent, payload = ours(512, "temperature", [0.5, 2.0, 0.7], view)
        print(f"{view:<9} temperature at seq_len=512: {t * 1e3:8.1f} ms   "
              f"sent {sent / 1e6:.2f} MB = {sent / payload:.2f}x payload")
        t, opened, updates = created(view)
        print(f"{view:<9} a new widget (12 tokens): {t * 1e3:8.1f} ms   messages "
              f"{opened + updates} ({opened} widget models opened, {updates} updates)")
    print("goals: speed-up >= 50x; sent <= 1.2x payload; seq_len 512 < 1000 ms; "
          "the overview no slower than the detailed view")


if __name__ == "__main__":
    main()
