"""Benchmark the NumPy attention engine against torch CPU ``nn.MultiheadAttention``.

Run ``python benchmarks/engine.py``.  Prints, in one run:

* the measured float64 matmul peak of this machine (square GEMM, GFLOP/s);
* for each size (seq_len, d_model, n_heads): our time in float64 (and float32), torch's
  ``nn.MultiheadAttention(need_weights=True, average_attn_weights=False)`` time in float64 on
  the same weights, the ratio ours / torch, our fraction of the matmul peak, and the peak
  extra memory our call allocates (tracemalloc traces NumPy allocations).

Calls after the first reuse the memory of traces already dropped (the engine's buffer pool,
``attention_widget.engine.BUFFER_POOL_BYTES``), as they do in a widget or a loop; torch's
side allocates through its own CPU allocator.

Times are medians over three rounds of consecutive calls, each round after a warm-up call
(see :func:`blocked_medians`); the matmul peak is the best of ten.  Both sides use the same
number of threads: ``torch.get_num_threads()``, which is also what OpenBLAS and the engine
use by default (the cores this process may run on).  On a busy machine every figure moves;
the ratio, measured in the same run, moves least.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import tracemalloc
from functools import partial

import numpy as np
import torch

from attention_widget import embed, init_params, multi_head_attention
from attention_widget.engine import free_buffers

SIZES = [(16, 64, 4), (64, 256, 8), (512, 512, 8), (1024, 768, 12), (2048, 768, 12)]


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Float64 GFLOP/s of an ``n x n`` by ``n x n`` matrix product: the best of ``repeats``.

    The best, not the median, is the machine's peak; a median drops on a busy machine.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    out = np.empty((n, n))
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def attention_flops(seq_len: int, d_model: int, n_heads: int, n_kv_heads: int) -> int:
    """Matmul FLOPs of one attention layer (projections, scores, weights @ V, W_O)."""
    d_head = d_model // n_heads
    d_kv = n_kv_heads * d_head
    projections = 2 * seq_len * d_model * (d_model + 2 * d_kv) + 2 * seq_len * d_model * d_model
    attend = 2 * 2 * n_heads * seq_len * seq_len * d_head
    return projections + attend


def torch_mha(params, d_model: int, n_heads: int) -> torch.nn.MultiheadAttention:
    """A float64 ``nn.MultiheadAttention`` holding ``params``' weights (no bias)."""
    mha = torch.nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
    mha = mha.double().eval()
    w_in = np.concatenate([params.w_q, params.w_k, params.w_v], axis=1).T
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.ascontiguousarray(w_in)))
        mha.out_proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(params.w_o.T)))
    return mha


def peak_extra_memory(fn) -> int:
    """Peak bytes allocated (and traced by tracemalloc) while ``fn()`` runs.

    The engine's buffer pool is emptied first, so the figure is what one call needs, not
    what it allocates on top of memory the pool kept from earlier calls.
    """
    free_buffers()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return peak - base


def blocked_medians(fns: dict, repeats: int, rounds: int = 3) -> dict:
    """Median seconds of each callable over ``rounds`` x ``repeats`` calls.

    Each round runs every callable ``repeats`` times in a row (after one warm-up call), then
    the next: the rounds share the machine's load fairly, while calls of one library are not
    interleaved with the other's, whose worker threads keep spinning for a while after a call
    (OpenMP in torch, OpenBLAS in NumPy) and would slow down the other side.
    """
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # warm-up: caches, page faults of the first allocation, the other's spinners
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure(seq_len: int, d_model: int, n_heads: int, repeats: int, peak: float) -> str:
    """One row of the table."""
    params = init_params(d_model, n_heads, seed=0)
    x = embed([f"t{i % 97}" for i in range(seq_len)], d_model)
    mha = torch_mha(params, d_model, n_heads)
    xt = torch.from_numpy(x)[None]

    def run_torch():
        with torch.inference_mode():
            return mha(xt, xt, xt, need_weights=True, average_attn_weights=False)

    ours = partial(multi_head_attention, x, params, n_heads=n_heads)
    ours32 = partial(multi_head_attention, x, params, n_heads=n_heads, dtype=np.float32)
    # the same answer on both sides, so the comparison is fair
    out_t, weights_t = run_torch()
    trace = ours()
    assert np.allclose(out_t[0].numpy(), trace.output, atol=1e-9), "ours and torch disagree"
    assert np.allclose(weights_t[0].numpy(), trace.weights, atol=1e-9), "weights disagree"
    del out_t, weights_t, trace
    t = blocked_medians({"ours": ours, "ours32": ours32, "torch": run_torch}, repeats)
    flops = attention_flops(seq_len, d_model, n_heads, n_heads)
    frac = flops / t["ours"] / 1e9 / peak
    mem = peak_extra_memory(ours)
    return (
        f"{seq_len:>7} {d_model:>7} {n_heads:>5} | "
        f"{t['ours'] * 1e3:>8.2f} {t['ours32'] * 1e3:>8.2f} "
        f"{t['torch'] * 1e3:>8.2f} | {t['ours'] / t['torch']:>5.2f} {100 * frac:>5.1f}% | "
        f"{mem / 2**20:>7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round and size")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    peak = matmul_peak()
    print(
        f"cores: {os.cpu_count()}, torch threads: {threads}, numpy {np.__version__}, "
        f"torch {torch.__version__}"
    )
    print(f"float64 matmul peak (2048^3 GEMM, best of 10): {peak:.1f} GFLOP/s\n")
    print("times in ms (median of 3 rounds); ratio = ours f64 / torch f64; %peak = layer matmul")
    print("FLOPs / our f64 time / matmul peak; mem = peak extra MiB our f64 call allocates")
    print("(tracemalloc)\n")
    header = (
        f"{'seq_len':>7} {'d_model':>7} {'heads':>5} | {'ours f64':>8} {'ours f32':>8} "
        f"{'torchf64':>8} | {'ratio':>5} {'%peak':>6} | {'mem MiB':>7}"
    )
    print(header)
    print("-" * len(header))
    for seq_len, d_model, n_heads in SIZES:
        repeats = args.repeats * 20 if seq_len <= 64 else args.repeats if seq_len <= 1024 else 2
        print(measure(seq_len, d_model, n_heads, repeats, peak), flush=True)
    print("\nGoals: ratio <= 1.0 at seq_len >= 512; >= 60% of peak at seq_len 1024;")
    print("ours f64 <= 1 ms at (64, 256, 8).")


if __name__ == "__main__":
    main()
