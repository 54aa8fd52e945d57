"""The input modes behind one interface: what each gives, what each fixes, and a new one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import traitlets

from attention_widget import (
    AttentionParams,
    AttentionWidget,
    embed,
    init_params,
    multi_head_attention,
    tokenize,
)
from attention_widget.sources import MAX_TOKENS, ArraysSource, Settings, TextSource

TEXT = "The cat sat on the mat because the cat was tired."


def test_text_source_gives_the_engines_trace_and_reuses_what_stays():
    src = TextSource()
    s = Settings(text=TEXT, d_model=32, n_heads=4, n_kv_heads=2, temperature=0.7,
                 mask="sliding", window=4, seed=3)
    got = src.trace(s)
    tokens = tokenize(TEXT)
    x = embed(tokens, 32, seed=3)
    params = init_params(32, 4, 2, seed=3)
    ref = multi_head_attention(x, params, n_heads=4, n_kv_heads=2, temperature=0.7,
                               mask="sliding", window=4)
    assert got.tokens == tokens and got.mask == "sliding, window=4" and got.layer is None
    for name in ("x", "q", "k", "v", "scores", "weights", "output"):
        np.testing.assert_array_equal(getattr(got.trace, name), getattr(ref, name), name)
    assert got.summary.startswith(f"seq_len={len(tokens)}, d_model=32, n_heads=4, n_kv_heads=2")

    # only the temperature changes: the projections and scores are the same arrays, the
    # weights those of a fresh computation
    hot = src.trace(dataclasses.replace(s, temperature=0.2))
    assert hot.trace.scores is got.trace.scores and hot.trace.q is got.trace.q
    fresh = multi_head_attention(x, params, n_heads=4, n_kv_heads=2, temperature=0.2,
                                 mask="sliding", window=4)
    np.testing.assert_allclose(hot.trace.weights, fresh.weights, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hot.trace.output, fresh.output, rtol=0, atol=1e-12)
    # anything else computes anew, keeping the inputs that did not change
    other = src.trace(dataclasses.replace(s, mask="causal"))
    assert other.trace.scores is not got.trace.scores and other.trace.x is got.trace.x
    mha = Settings(text=TEXT, d_model=32, n_heads=4, seed=3)
    assert src.trace(mha).params is src.trace(dataclasses.replace(mha, n_heads=8)).params


@pytest.mark.parametrize(("text", "words"), [("  \n", "empty"),
                                             (" ".join(["a"] * (MAX_TOKENS + 1)),
                                              f"at most {MAX_TOKENS:,}")])
def test_text_source_names_bad_text(text, words):
    with pytest.raises(ValueError, match=words):
        TextSource().trace(Settings(text=text))


def test_arrays_source_offers_the_head_counts_its_weights_allow():
    # d_model 12 with key/value width 6: d_head = 12 / h must divide 6 into whole kv heads
    # that group the query heads evenly: h = 2 (1 kv head), 4 (2), 6 (3), 12 (6)
    params = init_params(12, 4, 2, seed=1)
    x = np.random.default_rng(0).standard_normal((5, 12))
    src = ArraysSource(x, params, list("abcde"), n_heads=4)
    assert src.n_kv_heads == 2
    assert src.head_options(12) == [2, 4, 6, 12]
    assert [src.kv_heads(Settings(n_heads=h)) for h in (2, 4, 6, 12)] == [1, 2, 3, 6]
    assert src.fixed["d_model"] == 12 and src.fixed["text"] == "a b c d e"
    with pytest.raises(ValueError, match=r"w_k has 6 columns\): choose one of \[2, 4, 6, 12\]"):
        src.check_heads(3, 12)
    with pytest.raises(TypeError, match="params must be an AttentionParams"):
        ArraysSource(x, {"w_q": params.w_q}, n_heads=4)
    w = AttentionWidget(source=src, n_heads=6)
    ref = multi_head_attention(x, params, n_heads=6, n_kv_heads=3)
    np.testing.assert_array_equal(w.trace.weights, ref.weights)
    assert list(w.controls["n_kv_heads"].options) == [3] and w.controls["n_kv_heads"].value == 3


def test_variants_only_at_head_counts_the_source_offers():
    s = Settings(text=TEXT, d_model=24, n_heads=4)
    out = TextSource().variants(s, temperatures=(0.5, 1.0))
    assert list(out) == ["temperature 0.5", "6 heads", "8 heads", "12 heads"]
    assert out["8 heads"].n_heads == 8 and out["temperature 0.5"].temperature == 0.5
    with pytest.raises(ValueError, match=r"head_counts \[5\]"):
        TextSource().variants(s, temperatures=(), head_counts=[5])


class MirrorSource(TextSource):
    """A source the package does not know: the text's weights with W_K = W_Q, so that every
    head's scores are symmetric.  It fixes the seed, and saves and restores by its kind."""

    kind = "mirror-test"
    fixed_by = "the mirror"

    @property
    def fixed(self):
        return {"seed": 7}

    def new_weights(self, s):
        p = super().new_weights(s)
        return AttentionParams(p.w_q, p.w_q, p.w_q, p.w_o)

    @classmethod
    def restore(cls, state):
        return cls()


def test_a_new_source_needs_no_change_to_the_widget(tmp_path):
    w = AttentionWidget(TEXT, d_model=16, n_heads=2, source=MirrorSource())
    assert w.seed == 7 and w.controls["seed"].layout.display == "none"
    with pytest.raises(traitlets.TraitError, match="seed is fixed at 7 by the mirror, got 1"):
        w.seed = 1
    with pytest.raises(traitlets.TraitError, match="seed is fixed at 7 by the mirror, got 1"):
        AttentionWidget(TEXT, d_model=16, n_heads=2, seed=1, source=MirrorSource())
    scores = w.trace.scores
    np.testing.assert_allclose(scores, scores.transpose(0, 2, 1), atol=1e-12)
    w.temperature = 0.5
    assert w.trace.scores is scores  # the shortcut comes with the base class
    w.save_state(tmp_path / "m.npz")
    w2 = AttentionWidget.load_state(tmp_path / "m.npz")  # restored by its kind
    assert w2.settings["mode"] == "mirror-test"
    np.testing.assert_array_equal(w2.trace.weights, w.trace.weights)


def test_state_files_of_an_unknown_mode_are_refused(tmp_path):
    from attention_widget.state import save_state

    w = AttentionWidget(TEXT, d_model=16, n_heads=2)
    settings = {**w.settings, "mode": "no-such-mode"}
    path = save_state(tmp_path / "s.npz", settings, w.trace, w.tokens, params=w.params,
                      x=w.trace.x)
    with pytest.raises(ValueError, match=r"s\.npz: the saved settings are incomplete or invalid"):
        AttentionWidget.load_state(path)
