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

Then, at (512, 512, 8), each attention variant (:mod:`attention_widget.variants`,
:mod:`attention_widget.kinds`) against its torch reference in float64 on the same weights,
written as transformers' eager code computes it: RoPE as Llama's ``apply_rotary_pos_emb``
(cos and sin made per call, as its rotary embedding does), ALiBi's bias added to the scores,
soft-capping as Gemma 2's, sinks as gpt-oss's, top-k with ``torch.topk``, cross-attention with
``nn.MultiheadAttention``, latent attention as DeepSeek-V3 concatenates its rotary parts.

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
import math
import os
import statistics
import time

import numpy as np
import torch

import attention_widget
from attention_widget import (
    cross_attention,
    embed,
    fast,
    init_latent_params,
    init_params,
    latent_attention,
    multi_head_attention,
)

SIZES = [(16, 64, 4), (64, 256, 8), (512, 512, 8), (1024, 768, 12)]
VARIANT_SIZE = (512, 512, 8)
VARIANT_NAMES = ("RoPE", "ALiBi", "soft-cap", "sinks", "top-k (64)", "all five")
LATENT = {"kv_rank": 128, "rope_dim": 32}  # the latent layer of the variants' table


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


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a writable copy


def rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Llama's RoPE on x [heads, seq, d]: cos and sin of the positions, then rotate_half."""
    n, d = x.shape[-2:]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    freqs = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    half = torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)
    return x * emb.cos() + half * emb.sin()


def torch_layer(w: dict, x: torch.Tensor, n_heads: int, *, rope=None, alibi=False, softcap=None,
                sinks=None, top_k=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One self-attention layer with the variants, in torch, as transformers' eager code."""
    n, d = x.shape
    d_head = d // n_heads
    q, k, v = ((x @ w[name]).view(n, n_heads, d_head).transpose(0, 1) for name in "qkv")
    if rope is not None:
        q, k = rotary(q, rope), rotary(k, rope)
    s = (q @ k.transpose(1, 2)) * d_head**-0.5
    if alibi:  # -slope * (i - j) (BLOOM adds slope * j: the same softmax, but not once capped)
        i = torch.arange(n, dtype=torch.float64)
        s = s - w["slopes"][:, None, None] * (i[:, None] - i[None, :])
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if top_k is not None:
        dropped = torch.ones_like(s, dtype=torch.bool).scatter_(-1, s.topk(top_k).indices, False)
        s = s.masked_fill(dropped, -math.inf)
    if sinks is not None:  # gpt-oss
        logits = torch.cat([s, w["sinks"][:, None, None].expand(n_heads, n, 1)], dim=-1)
        logits = logits - logits.max(dim=-1, keepdim=True).values
        p = torch.softmax(logits, dim=-1)[..., :-1]
    else:
        p = torch.softmax(s, dim=-1)
    return (p @ v).transpose(0, 1).reshape(n, d) @ w["o"], p


def torch_latent(w: dict, x: torch.Tensor, n_heads: int, theta: float):
    """Multi-head latent attention in torch, rotary parts concatenated as DeepSeek-V3's."""
    n = x.shape[0]
    c_kv = x @ w["dkv"]
    k, v = ((c_kv @ w[name]).view(n, n_heads, -1).transpose(0, 1) for name in ("uk", "uv"))
    q = (x @ w["q"]).view(n, n_heads, -1).transpose(0, 1)
    q_rope = rotary((x @ w["qr"]).view(n, n_heads, -1).transpose(0, 1), theta)
    k_rope = rotary((x @ w["kr"])[None], theta).expand(n_heads, -1, -1)
    q, k = torch.cat([q, q_rope], dim=-1), torch.cat([k, k_rope], dim=-1)
    p = torch.softmax((q @ k.transpose(1, 2)) * q.shape[-1] ** -0.5, dim=-1)
    return (p @ v).transpose(0, 1).reshape(n, -1) @ w["o"], p


def variant_cases(seq_len: int, d_model: int, n_heads: int) -> dict:
    """Each variant: (our call, the torch call), on the same weights and inputs."""
    params = init_params(d_model, n_heads, seed=0)
    x = embed([f"t{i % 97}" for i in range(seq_len)], d_model)
    x_kv = embed([f"s{i % 89}" for i in range(seq_len)], d_model)
    sinks = np.random.default_rng(0).standard_normal(n_heads)
    w = {name: t64(getattr(params, f"w_{name}")) for name in "qkvo"}
    w["slopes"], w["sinks"] = t64(attention_widget.alibi_slopes(n_heads)), t64(sinks)
    xt = t64(x)
    options = dict(zip(VARIANT_NAMES[:5], ({"rope": 10000.0}, {"alibi": True}, {"softcap": 50.0},
                                       {"sinks": sinks}, {"top_k": 64}), strict=True))
    options["all five"] = {k: v for o in options.values() for k, v in o.items()}
    cases = {"none": ({}, {})}
    for name, ours in options.items():
        theirs = {**ours, "sinks": w["sinks"]} if "sinks" in ours else ours
        cases[name] = (ours, theirs)
    table = {
        name: (lambda o=ours: multi_head_attention(x, params, n_heads=n_heads, **o),
               lambda o=theirs: torch_layer(w, xt, n_heads, **o))
        for name, (ours, theirs) in cases.items()
    }
    mha = torch_mha(params, d_model, n_heads)
    q_t, kv_t = xt[None], t64(x_kv)[None]
    table["cross"] = (lambda: cross_attention(x, x_kv, params, n_heads=n_heads),
                      lambda: tuple(t[0] for t in mha(q_t, kv_t, kv_t, need_weights=True,
                                                      average_attn_weights=False)))
    latent = init_latent_params(d_model, n_heads, seed=0, **LATENT)
    w_latent = {name[2:]: t64(getattr(latent, name)) for name in
                ("w_dkv", "w_uk", "w_uv", "w_q", "w_qr", "w_kr", "w_o")}
    table[f"latent (kv_rank {LATENT['kv_rank']}, rope_dim {LATENT['rope_dim']})"] = (
        lambda: latent_attention(x, latent, n_heads=n_heads, rope=10000.0),
        lambda: torch_latent(w_latent, xt, n_heads, 10000.0))
    return table


def measure_variants(repeats: int, pause: float) -> list[str]:
    """The rows of the variants' table.

    Each variant's calls are interleaved with the plain layer's on both sides, so that the
    cost a variant adds to a layer is measured too (for RoPE, ALiBi, soft-capping, sinks and
    top-k; cross and latent attention are other layers).
    """
    rows = []
    cases = variant_cases(*VARIANT_SIZE)
    plain_ours, plain_theirs = cases.pop("none")
    for name, (ours, theirs) in cases.items():

        def run_torch(theirs=theirs):
            with torch.inference_mode():
                return theirs()

        def plain_torch():
            with torch.inference_mode():
                return plain_theirs()

        out_t, weights_t = run_torch()  # the same answer on both sides
        trace = ours()
        assert np.allclose(out_t.numpy(), trace.output, atol=1e-9), f"{name}: outputs disagree"
        assert np.allclose(weights_t.numpy(), trace.weights, atol=1e-9), f"{name}: weights"
        del out_t, weights_t, trace
        t = interleaved({"engine": ours, "torch": run_torch, "engine plain": plain_ours,
                         "torch plain": plain_torch}, repeats, pause)
        med = {side: statistics.median(ts) * 1e3 for side, ts in t.items()}
        ratio = statistics.median(a / b for a, b in zip(t["engine"], t["torch"], strict=True))
        added = (f"{med['engine'] - med['engine plain']:+.1f} | "
                 f"{med['torch'] - med['torch plain']:+.1f}" if name in VARIANT_NAMES
                 else "– | –")
        rows.append(f"| {name} | {med['engine']:.2f} | {med['torch']:.2f} | {ratio:.2f} | "
                    f"{med['engine plain']:.2f} | {med['torch plain']:.2f} | {added} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="rounds per size")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds of rest before each timed call")
    parser.add_argument("--tables", choices=["all", "sizes", "variants"], default="all",
                        help="which tables to measure")
    args = parser.parse_args()
    print(f"attention_widget {attention_widget.__version__}, numpy {np.__version__}, "
          f"torch {torch.__version__}; cores: {len(os.sched_getaffinity(0))}, torch threads: "
          f"{torch.get_num_threads()}; fast path from {fast.MIN_SCORES} scores")
    print(f"medians of {args.repeats} interleaved rounds, ms; ratios: median of the per-round "
          "ratios to torch\n")
    if args.tables in ("all", "sizes"):
        print("| seq_len | d_model | heads | engine f64 | reference f64 | engine f32 | torch f64 "
              "| engine / torch | reference / torch |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for seq_len, d_model, n_heads in SIZES:
            repeats = args.repeats * 3 if seq_len <= 64 else args.repeats
            print(measure(seq_len, d_model, n_heads, repeats, args.pause), flush=True)
        print("\nGoals: engine / torch <= 1 at (512, 512, 8) and (1024, 768, 12); "
              "reference / torch <= 2 there.\n")
    if args.tables in ("all", "variants"):
        print(f"variants at (seq_len, d_model, heads) = {VARIANT_SIZE}, float64\n")
        print("| variant | engine (ms) | torch (ms) | engine / torch | engine plain | torch plain "
              "| engine: variant adds | torch: variant adds |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in measure_variants(args.repeats, args.pause):
            print(row, flush=True)
        print("\nGoal: engine / torch <= 1 for every variant.")


if __name__ == "__main__":
    main()
