"""Text -> tokens -> vectors: tokenize, embed and the sinusoidal positional encodings."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from attention_widget import embed, positional_encoding, tokenize


# ---- tokenize -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("The cat sat on the mat.", ["The", "cat", "sat", "on", "the", "mat", "."]),
        ("the the the", ["the", "the", "the"]),  # duplicates kept, in order
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("don't stop", ["don't", "stop"]),  # an inner apostrophe stays inside the word
        ("Café naïve — déjà vu!", ["Café", "naïve", "—", "déjà", "vu", "!"]),
        ("Straße ist groß", ["Straße", "ist", "groß"]),
        ("Привет, мир", ["Привет", ",", "мир"]),
        ("我爱你", ["我", "爱", "你"]),  # CJK: one character per token
        ("I ❤ NY?", ["I", "❤", "NY", "?"]),
        ("a-b", ["a", "-", "b"]),
        ("  tabs\tand\nnewlines  ", ["tabs", "and", "newlines"]),
        ("", []),
        ("   ", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_normalises_to_nfc():
    composed = "caf\u00e9"  # é as one code point
    decomposed = "cafe\u0301"  # e + combining acute accent
    assert composed != decomposed
    assert tokenize(decomposed) == tokenize(composed) == ["café"]
    assert unicodedata.is_normalized("NFC", tokenize(decomposed)[0])


def test_tokenize_keeps_every_character_but_spaces():
    text = "Attention, please: the model's heads (12 of them) look back!"
    assert "".join(tokenize(text)) == "".join(text.split())


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a", "b"]])
def test_tokenize_rejects_non_text(bad):
    with pytest.raises(TypeError, match=rf"text must be a str, got {type(bad).__name__}"):
        tokenize(bad)


# ---- embed ----------------------------------------------------------------------------------
def test_embed_shape_and_dtype():
    x = embed(["a", "b", "c"], 10)
    assert x.shape == (3, 10) and x.dtype == np.float64
    assert embed([], 4).shape == (0, 4)


def test_same_token_same_base_vector_in_every_sentence():
    a = embed(tokenize("the cat sat on the mat"), 16, positional=False)
    b = embed(tokenize("a dog and the mat"), 16, positional=False)
    np.testing.assert_array_equal(a[0], a[4])  # "the" twice in one sentence
    np.testing.assert_array_equal(a[0], b[3])  # "the" in another sentence
    np.testing.assert_array_equal(a[5], b[4])  # "mat"
    assert not np.allclose(a[1], a[2])  # different words, different vectors


def test_positional_encoding_tells_repeated_tokens_apart():
    x = embed(["the", "the"], 16)
    base = embed(["the", "the"], 16, positional=False)
    assert not np.allclose(x[0], x[1])
    np.testing.assert_allclose(x - base, positional_encoding(2, 16), rtol=0, atol=1e-15)


def test_embed_depends_on_the_seed_and_is_deterministic():
    a = embed(["cat"], 8, seed=0)
    np.testing.assert_array_equal(a, embed(["cat"], 8, seed=0))
    assert not np.allclose(a, embed(["cat"], 8, seed=1))


def test_larger_d_model_extends_a_token_vector():
    small = embed(["cat", "dog"], 8, positional=False)
    large = embed(["cat", "dog"], 20, positional=False)
    np.testing.assert_array_equal(large[:, :8], small)


def test_base_vectors_are_standard_normal():
    x = embed([f"w{i}" for i in range(400)], 64, positional=False)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1.0) < 0.02


EMBED_SNIPPET = (
    "import hashlib; from attention_widget import embed, tokenize; "
    "x = embed(tokenize('Le café, the cat — 猫 and the cat.'), 24, seed=3); "
    "print(hashlib.sha256(x.tobytes()).hexdigest())"
)


def test_embed_is_the_same_in_other_processes():
    """Python's ``hash()`` of a str changes per process (PYTHONHASHSEED); embed must not."""
    here = embed(tokenize("Le café, the cat — 猫 and the cat."), 24, seed=3)
    digests = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", EMBED_SNIPPET], env=env, check=True,
                             capture_output=True, text=True)
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(here.tobytes()).hexdigest()}


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        (("cat", 8), TypeError, r"tokens must be a list of str"),
        (([1, 2], 8), TypeError, r"tokens must be a list of str"),
        ((["cat"], 0), ValueError, r"d_model must be >= 1, got 0"),
        ((["cat"], 8.5), TypeError, r"d_model must be an integer, got 8\.5"),
        ((["cat"], 8, -1), ValueError, r"seed must be >= 0, got -1"),
    ],
)
def test_embed_bad_arguments(args, error, pattern):
    with pytest.raises(error, match=pattern):
        embed(*args)


# ---- positional encoding --------------------------------------------------------------------
@pytest.mark.parametrize(("seq_len", "d_model"), [(1, 2), (7, 8), (50, 16), (5, 9)])
def test_positional_encoding_is_the_paper_formula(seq_len, d_model):
    """PE(pos, 2i) = sin(pos / 10000^(2i / d_model)), PE(pos, 2i+1) = cos(same angle)."""
    pe = positional_encoding(seq_len, d_model)
    assert pe.shape == (seq_len, d_model)
    for pos in range(seq_len):
        for col in range(d_model):
            i = col // 2
            angle = pos / 10000 ** (2 * i / d_model)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert pe[pos, col] == pytest.approx(expected, abs=1e-12)


def test_positional_encoding_first_rows_by_hand():
    pe = positional_encoding(2, 4)
    # position 0: sin 0 = 0, cos 0 = 1
    np.testing.assert_allclose(pe[0], [0.0, 1.0, 0.0, 1.0], atol=0)
    # position 1, d_model 4: angles 1 / 10000^0 = 1 and 1 / 10000^(2/4) = 0.01
    np.testing.assert_allclose(pe[1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                               rtol=0, atol=1e-15)
    assert np.abs(positional_encoding(300, 32)).max() <= 1.0
