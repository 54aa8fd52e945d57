"""Text -> token ids and readable token strings, with a checkpoint's own ``tokenizer.json``.

The file is read by the ``tokenizers`` package (an optional extra:
``pip install attention-widget[models]``).  :class:`Tokenizer` adds what a display needs:
byte-level BPE (``"Ġthe"``) and SentencePiece (``"▁the"``) markers turned back into spaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INSTALL_HINT", "Encoding", "Tokenizer", "load_tokenizer", "marker_style"]

#: How to install what reading a checkpoint needs beyond the widget's dependencies.
INSTALL_HINT = "pip install attention-widget[models]"


@dataclass(frozen=True)
class Encoding:
    r"""A text as the model sees it.

    Attributes
    ----------
    text : str
        The text.
    ids : ndarray of int64, shape (seq_len,)
        Token ids, special tokens included.
    tokens : list of str
        The tokenizer's own token strings (``"##ing"``, ``"Ġthe"``, ``"[CLS]"``).
    display : list of str
        Readable token strings: byte-level BPE (``"Ġthe"``) and SentencePiece (``"▁the"``)
        markers turned back into spaces; WordPiece ``"##"`` and special tokens kept.  A
        byte-level token holding part of a multi-byte character shows the loose bytes as
        ``\xNN`` escapes (``"é"`` split in two shows as ``"h\xc3"``, ``"\xa9ll"``).
    special : list of bool
        True for special tokens the tokenizer added (``[CLS]``, ``[SEP]``, BOS, ...).
    """

    text: str
    ids: np.ndarray
    tokens: list[str]
    display: list[str]
    special: list[bool]


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = _byte_decoder()


class Tokenizer:
    """A ``tokenizers.Tokenizer`` and how its token strings are shown.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        With padding and truncation switched off.
    style : {"bytelevel", "metaspace", "plain"}
        How token strings mark spaces: ``"Ġ"`` and byte characters (GPT-2, Llama 3, Qwen),
        ``"▁"`` (SentencePiece), or not at all (WordPiece).
    """

    def __init__(self, tokenizer: Any, style: str) -> None:
        self.tokenizer = tokenizer
        self.style = style

    def encode(self, text: str) -> Encoding:
        """Tokenize ``text``, special tokens added, without checks of length or ids."""
        enc = self.tokenizer.encode(text, add_special_tokens=True)
        ids = np.asarray(enc.ids, dtype=np.int64)
        ids.setflags(write=False)  # shared through the model's caches
        tokens = list(enc.tokens)
        special = [bool(s) for s in enc.special_tokens_mask]
        return Encoding(text, ids, tokens, self.display(tokens, special), special)

    def strings(self, ids: np.ndarray) -> tuple[list[str], list[str], list[bool]]:
        """Token strings of ``ids`` (e.g. generated ones): raw, readable, and special flags.

        Parameters
        ----------
        ids : ndarray of int, shape (n,)

        Returns
        -------
        tokens, display : list of str
            As :attr:`Encoding.tokens` and :attr:`Encoding.display`.
        special : list of bool
            True for the tokenizer's special tokens.
        """
        special_ids = {i for i, t in self.tokenizer.get_added_tokens_decoder().items()
                       if t.special}  # fmt: skip
        tokens = [self.tokenizer.id_to_token(int(i)) or "" for i in ids]
        special = [int(i) in special_ids for i in ids]
        return tokens, self.display(tokens, special), special

    def decode(self, ids: np.ndarray) -> str:
        """The text of ``ids``, special tokens left out."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def display(self, tokens: list[str], special: list[bool]) -> list[str]:
        """Readable strings of ``tokens`` (see :attr:`Encoding.display`)."""
        pairs = zip(tokens, special, strict=True)
        if self.style == "bytelevel":
            return [
                tok
                if sp or not all(c in _BYTE_DECODER for c in tok)
                else bytes(_BYTE_DECODER[c] for c in tok).decode("utf-8", "backslashreplace")
                for tok, sp in pairs
            ]
        if self.style == "metaspace":
            return [tok if sp else tok.replace("▁", " ") for tok, sp in pairs]
        return list(tokens)


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(
            "reading tokenizer.json needs the optional `tokenizers` package; install it with "
            f"`{INSTALL_HINT}`"
        ) from err
    return tokenizers


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a ``tokenizer.json`` (the fast-tokenizer format).

    Raises
    ------
    ValueError
        If the file is not a valid tokenizer.json (the message names it).
    ImportError
        If the optional ``tokenizers`` package is missing.
    """
    tokenizers = _import_tokenizers()
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
        tok = tokenizers.Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises its own Exception types
        raise ValueError(f"{path}: not a valid tokenizer.json ({err})") from None
    tok.no_padding()  # e.g. MiniLM's file pads every text to 128 tokens
    tok.no_truncation()
    return Tokenizer(tok, marker_style(spec))


def marker_style(spec: dict) -> str:
    """How the tokenizer described by ``spec`` (a parsed tokenizer.json) marks spaces.

    Returns
    -------
    {"bytelevel", "metaspace", "plain"}
        See :class:`Tokenizer`.
    """
    markers = json.dumps(spec.get("decoder")) + json.dumps(spec.get("pre_tokenizer"))
    if "ByteLevel" in markers:
        return "bytelevel"
    if "Metaspace" in markers or "\\u2581" in markers or "▁" in markers:
        return "metaspace"
    return "plain"
