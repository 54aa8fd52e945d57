"""Text to tokens to vectors: the input ``X`` of the attention layer.

Deterministic across processes and platforms: a token's vector comes from a cryptographic hash
of its text and the seed (never Python's salted ``hash()``), so "cat" is the same vector in
every sentence, notebook and machine.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ._checks import check_int as _check_int

__all__ = ["embed", "positional_encoding", "tokenize"]

# CJK ideographs and kana are written without spaces: one character, one token (as BERT does).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+(?:['’](?:(?![{_CJK}])\w)+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split text into words and punctuation marks.

    Parameters
    ----------
    text : str
        Any Unicode text.  It is normalised to NFC first, so "é" typed either way is one token.

    Returns
    -------
    list of str
        Words (letters, digits, inner apostrophes: "don't" is one token) and single punctuation
        marks or symbols, in order; repeated words are kept.

    Examples
    --------
    >>> tokenize("The cat sat on the mat.")
    ['The', 'cat', 'sat', 'on', 'the', 'mat', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(unicodedata.normalize("NFC", text))


def _token_seed(token: str, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=4096)
def _token_vector(token: str, d_model: int, seed: int) -> np.ndarray:
    # The first d values of a generator's stream do not depend on how many are drawn, so a
    # larger d_model extends a token's vector instead of redrawing it.
    vec = np.random.default_rng(_token_seed(token, seed)).standard_normal(d_model)
    vec.setflags(write=False)
    return vec


def positional_encoding(seq_len: int, d_model: int) -> np.ndarray:
    """Sinusoidal positional encodings of "Attention Is All You Need" (section 3.5).

    Returns
    -------
    ndarray, shape (seq_len, d_model)
        ``PE[pos, 2i] = sin(pos / 10000^(2i/d_model))``, ``PE[pos, 2i+1] = cos(...)``.
    """
    seq_len = _check_int("seq_len", seq_len, minimum=0)
    d_model = _check_int("d_model", d_model)
    pos = np.arange(seq_len)[:, None]
    freq = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)  # [ceil(d/2)]
    pe = np.empty((seq_len, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return pe


def embed(
    tokens: Sequence[str], d_model: int, seed: int = 0, positional: bool = True
) -> np.ndarray:
    """Vectors for a token sequence.

    Parameters
    ----------
    tokens : sequence of str
        For example the output of :func:`tokenize`.
    d_model : int
        Width of each vector.
    seed : int, default 0
        Chooses the vocabulary of random vectors.
    positional : bool, default True
        Add the sinusoidal positional encodings, so that the same word at two positions gets two
        different rows.

    Returns
    -------
    ndarray, shape (seq_len, d_model)
        Row ``i`` is the token's standard-normal base vector (the same in every sentence and
        process), plus ``positional_encoding`` when ``positional``.
    """
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of str (use tokenize(text) for a sentence)")
    d_model = _check_int("d_model", d_model)
    seed = _check_int("seed", seed, minimum=0)
    x = np.zeros((len(tokens), d_model))
    for i, token in enumerate(tokens):
        x[i] = _token_vector(token, d_model, seed)
    if positional:
        x += positional_encoding(len(tokens), d_model)
    return x
