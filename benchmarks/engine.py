"""Benchmark the NumPy attention engine against torch CPU ``nn.MultiheadAttention``.

Run ``python benchmarks/engine.py``, alone on the machine.  For each size (seq_len, d_model,
n_heads) it prints, in one run:

* ``engine``: :func:`attention_widget.multi_head_attention` in float64, as a user calls it
  (large layers take :mod:`attention_widget.fast`);
* ``reference``: the same call with the fast path switched off (``fast.MIN_SCORES`` raised):
  the plain NumPy steps of :mod:`attention_widget.engine` alone;
* ``engine f32``: the engine in float32;
* ``torch``: ``torch.nn.MultiheadAttention(need_weights=True, average_attn_weights=False)``
  in float64, holding the same weights;
* the ratios engine / torch and reference / torch.

Every time is a median over interleaved calls: one call of each contender in turn, ``repeats``
rounds, the order rotated every round so none always follows the same one.  Each ratio is the
median of the per-round ratios (a contender against torch in the same round).  A pause before
every timed call lets the previous call's worker threads stop spinning (OpenBLAS keeps its
threads busy for about 0.1 s after a call, OpenMP for a while too), so one side's leftovers do
not slow the other down: calls from a widget come that far apart.  Both libraries use every
core this process may run on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

import attention_widget
from attention_widget import embed, fast, init_params, multi_head_attention

SIZES = [(16, 64, 4), (64, 256, 8), (512, 512, 8), (1024, 768, 12)]


def torch_mha(params, d_model: int, n_heads: int) -> torch.nn.MultiheadAttention:
    """A float64 ``nn.MultiheadAttention`` holding ``params``' weights (no bias)."""
    mha = torch.nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
    mha = mha.double().eval()
    w_in = np.concatenate([params.w_q, params.w_k, params.w_v], axis=1).T
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.ascontiguousarray(w_in)))
        mha.out_proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(params.w_o.T)))
    return mha


def reference(fn):
    """``fn`` with the fast path switched off: every size takes the plain steps."""

    def run():
        saved, fast.MIN_SCORES = fast.MIN_SCORES, float("inf")
        try:
            return fn()
        finally:
            fast.MIN_SCORES = saved

    return run


def interleaved(fns: dict, repeats: int, pause: float) -> dict[str, list[float]]:
    """Seconds of every call of each contender, ``repeats`` rounds of one call each."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: caches, first allocations, thread pools
        fns[name]()
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(pause)
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def measure(seq_len: int, d_model: int, n_heads: int, repeats: int, pause: float) -> str:
    """One row of the table."""
    params = init_params(d_model, n_heads, seed=0)
    x = embed([f"t{i % 97}" for i in range(seq_len)], d_model)
    mha = torch_mha(params, d_model, n_heads)
    xt = torch.from_numpy(x)[None]

    def run_torch():
        with torch.inference_mode():
            return mha(xt, xt, xt, need_weights=True, average_attn_weights=False)

    def ours(dtype=np.float64):
        return multi_head_attention(x, params, n_heads=n_heads, dtype=dtype)

    # the same answer on every side, so the comparison is fair
    out_t, weights_t = run_torch()
    for trace in (ours(), reference(ours)()):
        assert np.allclose(out_t[0].numpy(), trace.output, atol=1e-9), "ours and torch disagree"
        assert np.allclose(weights_t[0].numpy(), trace.weights, atol=1e-9), "weights disagree"
    del out_t, weights_t, trace
    fns = {"engine": ours, "reference": reference(ours),
           "f32": lambda: ours(np.float32), "torch": run_torch}
    t = interleaved(fns, repeats, pause)
    med = {name: statistics.median(ts) for name, ts in t.items()}
    ratio = {name: statistics.median(a / b for a, b in zip(t[name], t["torch"], strict=True))
             for name in ("engine", "reference")}
    return (
        f"| {seq_len} | {d_model} | {n_heads} | {med['engine'] * 1e3:.2f} | "
        f"{med['reference'] * 1e3:.2f} | {med['f32'] * 1e3:.2f} | {med['torch'] * 1e3:.2f} | "
        f"{ratio['engine']:.2f} | {ratio['reference']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="rounds per size")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds of rest before each timed call")
    args = parser.parse_args()
    print(f"attention_widget {attention_widget.__version__}, numpy {np.__version__}, "
          f"torch {torch.__version__}; cores: {len(os.sched_getaffinity(0))}, torch threads: "
          f"{torch.get_num_threads()}; fast path from {fast.MIN_SCORES} scores")
    print(f"medians of {args.repeats} interleaved rounds, ms; ratios: median of the per-round "
          "ratios to torch\n")
    print("| seq_len | d_model | heads | engine f64 | reference f64 | engine f32 | torch f64 "
          "| engine / torch | reference / torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seq_len, d_model, n_heads in SIZES:
        repeats = args.repeats * 3 if seq_len <= 64 else args.repeats
        print(measure(seq_len, d_model, n_heads, repeats, args.pause), flush=True)
    print("\nGoals: engine / torch <= 1 at (512, 512, 8) and (1024, 768, 12); "
          "reference / torch <= 2 there.")


if __name__ == "__main__":
    main()
