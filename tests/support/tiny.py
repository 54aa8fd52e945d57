"""Tiny random checkpoints written by transformers' ``save_pretrained`` (tests, benchmarks).

transformers' default initialisation (std 0.02) gives near-uniform attention, against which
almost anything compares equal by accident: :func:`randomize` draws weights that make sharp
heads and norms far from the identity, and :func:`save` writes the model and a tokenizer in
the Hugging Face folder layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["assert_decoder_matches", "fixture", "maker", "randomize", "save"]


def randomize(model: Any, stds: dict[str, float] | None = None, matrix_std: float = 0.35) -> Any:
    """Redraw every parameter of a torch ``model`` in place; return it.

    Matrices (and stacks of them) ~ N(0, matrix_std), norm weights ~ 1 + N(0, 0.3), other
    vectors (biases) ~ N(0, 0.1); a parameter whose name ends with a key of ``stds`` ~ N(0,
    that std).  The default ``matrix_std`` suits widths of a few dozen: wider models need less
    (the float32 rounding of very sharp heads grows from layer to layer).
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            own = [std for end, std in (stds or {}).items() if name.endswith(end)]
            if own:
                p.normal_(0.0, own[0])
            elif p.ndim >= 2:
                p.normal_(0.0, matrix_std)
            elif ("norm" in name.lower() or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
    return model


def save(model: Any, tokenizer: Any, folder: Path, dtype: Any = None, **save_kw: Any) -> Path:
    """Write ``model`` (cast to ``dtype`` if given) and ``tokenizer.json`` into ``folder``.

    ``save_kw`` go to ``save_pretrained`` (e.g. ``max_shard_size="40KB"`` for shards).
    """
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, **save_kw)
    tokenizer.save(str(Path(folder) / "tokenizer.json"))
    return Path(folder)


def maker(
    config_class: Any,
    model_class: Any,
    configs: dict,
    tokenizer: Any,
    *,
    seed: int,
    stds: dict[str, float] | None = None,
    matrix_std: float = 0.35,
) -> Any:
    """``make(folder, kind, dtype=None, **save_kw)``: a ``model_class`` of ``configs[kind]``.

    ``tokenizer()`` gives the tokenizer (its vocabulary sets ``vocab_size``); the weights are
    drawn by :func:`randomize` (with ``stds`` and ``matrix_std``) after
    ``torch.manual_seed(seed)``.
    """
    import torch

    def make(folder: Path, kind: str, dtype: Any = None, **save_kw: Any) -> Path:
        torch.manual_seed(seed)
        tok = tokenizer()
        cfg = config_class(vocab_size=tok.get_vocab_size(), **configs[kind])
        model = randomize(model_class(cfg), stds, matrix_std)
        return save(model, tok, folder, dtype, **save_kw)

    return make


def fixture(make: Any, configs: dict, *, bf16: str, sharded: str, shard: str) -> Any:
    """A module-scoped pytest fixture: folder by name, of each kind of ``configs`` and two more.

    ``make(folder, kind, dtype=None, **save_kw)`` (see :func:`maker`) writes each; ``"bf16"``
    is kind ``bf16`` in bfloat16, ``"sharded"`` kind ``sharded`` in shards of ``shard``.
    """
    import pytest
    import torch

    @pytest.fixture(scope="module")
    def checkpoints(tmp_path_factory: Any) -> dict[str, Path]:
        root = tmp_path_factory.mktemp("tiny")
        out = {kind: make(root / kind, kind) for kind in configs}
        out["bf16"] = make(root / "bf16", bf16, torch.bfloat16)
        out["sharded"] = make(root / "sharded", sharded, max_shard_size=shard)
        return out

    return checkpoints


def assert_decoder_matches(folder: Path, text: str, tol: float) -> tuple[Any, dict]:
    """Our NumPy model of a causal LM ``folder`` against transformers (eager, float32).

    Checks every layer's attention and every hidden state to ``tol``, sharp heads in the
    reference, exact zeros above the diagonal and, in sliding layers, beyond the window
    (which the text must pass).

    Returns
    -------
    model : PretrainedModel
    seen : dict
        ``ids``, ``attentions`` and ``hidden`` (ours), ``ref`` (the transformers model),
        ``ref_attentions``, ``ref_hidden`` and ``logits`` (transformers').
    """
    import numpy as np
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    model = load_pretrained(folder)
    ids = model.encode(text).ids
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32
    ).eval()
    with torch.no_grad():
        out = ref(torch.from_numpy(ids[None].copy()), output_attentions=True,
                  output_hidden_states=True)  # fmt: skip
    seen = {
        "ids": ids, "ref": ref, "logits": out.logits[0].numpy(),
        "attentions": model.attentions(text), "hidden": model.hidden_states(text),
        "ref_attentions": [a[0].numpy() for a in out.attentions],
        "ref_hidden": [h[0].numpy() for h in out.hidden_states],
    }  # fmt: skip
    pairs = [("attentions", model.n_layers), ("hidden", model.n_layers + 1)]
    for key, count in pairs:
        ours, theirs = seen[key], seen["ref_" + key]
        assert len(ours) == len(theirs) == count
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape and float(np.abs(a - b).max()) < tol, key
    assert max(float(a.max()) for a in seen["ref_attentions"]) > 0.5  # sharp heads
    for i, a in enumerate(seen["attentions"]):
        assert not np.triu(a, k=1).any()  # causal: future keys exactly 0
        window = model.layer_window(i)
        if window is not None:  # a sliding layer: keys window or more behind exactly 0 too
            assert ids.size > window and not np.tril(a, k=-window).any()
    sharded = (Path(folder) / "model.safetensors.index.json").is_file()
    assert sharded == (len(list(Path(folder).glob("model-*.safetensors"))) > 1)
    return model, seen
