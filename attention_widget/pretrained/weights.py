"""A checkpoint's tensors as a family reads them: names, shapes, prepared layers, output head.

:class:`CheckpointWeights` is the base of :class:`~attention_widget.pretrained.family.Family`:
it finds the tensors' name prefix, checks every tensor the family reads against the shape its
``config.json`` implies, hands out float32 arrays and keeps prepared layers within a byte
budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .blocks import linear
from .checkpoint import FLOAT_DTYPES, Tensors, held_bytes

__all__ = ["CheckpointWeights"]


class CheckpointWeights:
    """The tensors of a checkpoint folder, read the way a family names them.

    Parameters
    ----------
    path : pathlib.Path
        The checkpoint folder.
    config : dict
        Its ``config.json``.
    tensors : Tensors
        Its tensors.
    cache_bytes : int
        Budget for prepared layers kept between calls (see :meth:`layer_weights`).
    """

    _HEAD_ROWS = 8192  # rows of a bfloat16 or float16 output embedding upcast at a time
    prefixes: tuple[str, ...] = ()  # optional tensor name prefixes, e.g. "bert."
    embedding = ""  # the token embedding's name: also locates the prefix
    output_head = "lm_head.weight"  # the output layer's name, when not tied to the embedding
    # set by the family (see Family.configure)
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_ff: int

    def __init__(self, path: Path, config: dict, tensors: Tensors, cache_bytes: int) -> None:
        self.path = path
        self.name = path.name
        self.config = config
        self.model_type = str(config["model_type"])
        self.tensors = tensors
        self.cache_bytes = int(cache_bytes)
        self.prefix = ""
        self._layer_cache: dict[int, dict[str, np.ndarray | None]] = {}
        self._last_layer: tuple[int, dict[str, np.ndarray | None]] | None = None
        self._cached_bytes = 0

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensors outside the layers, besides the token embedding (the family's part).

        Names are without the prefix.
        """
        raise NotImplementedError

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors of layer ``i``: key -> (name, shape) (the family's part)."""
        raise NotImplementedError

    def prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """The tensors of layer ``i`` as float32 arrays, under the keys of :meth:`layer_tensors`.

        Kept by :meth:`layer_weights`.  A family may override this to arrange them.
        """
        return {key: self.weight(name) for key, (name, _) in self.layer_tensors(i).items()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the family reads (name without the prefix) and its shape."""
        vocab = self.tensors.shape(self.prefix + self.embedding)[0]
        out = {self.embedding: (vocab, self.d_model), **self.tensor_shapes()}
        for i in range(self.n_layers):
            out.update(self.layer_tensors(i).values())
        return out

    def locate_tensors(self) -> None:
        """Find the name prefix, check every tensor's shape and dtype, read the vocabulary size.

        Runs once the family has read its configuration.

        Raises
        ------
        ValueError
            Naming the folder and the tensor: missing, of another shape than ``config.json``
            implies, or not of a float dtype.
        """
        self.prefix = self._find_prefix()
        self._check_shapes()
        self.vocab_size = self.tensors.shape(self.prefix + self.embedding)[0]
        self.stored_dtype = self.tensors.dtype(self.prefix + self.embedding)

    def weight(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Tensor ``name`` (without the prefix) as float32; only ``rows`` if given."""
        return self.tensors.f32(self.prefix + name, rows=rows)

    def stacked(self, names: list[str]) -> np.ndarray:
        """Tensors ``names`` stacked along their first axis, as one new float32 array."""
        return self.tensors.f32_stacked([self.prefix + n for n in names])

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds tensor ``name`` (without the prefix)."""
        return self.prefix + name in self.tensors

    def layer_weights(self, i: int) -> dict[str, np.ndarray | None]:
        """:meth:`prepare_layer`, kept while the prepared layers fit in ``cache_bytes``.

        A layer beyond the budget is kept until another one is asked for: a block calls this
        several times.
        """
        if i in self._layer_cache:
            return self._layer_cache[i]
        if self._last_layer is not None and self._last_layer[0] == i:
            return self._last_layer[1]
        self._last_layer = None  # let it go before the next layer is read
        w = self.prepare_layer(i)
        size = held_bytes(w)
        if self._cached_bytes + size <= self.cache_bytes:
            self._layer_cache[i] = w
            self._cached_bytes += size
        else:  # beyond the budget: kept only while this layer runs
            self._last_layer = (i, w)
        return w

    def forget_layers(self) -> None:
        """Let go of every prepared layer."""
        self._layer_cache.clear()
        self._last_layer = None
        self._cached_bytes = 0

    def output_projection(self, h: np.ndarray) -> np.ndarray:
        """``h @ W.T`` with ``W`` (vocab, d_model) the output head of :meth:`head_name`.

        Parameters
        ----------
        h : ndarray, shape (seq, d_model)

        Returns
        -------
        ndarray of float32, shape (seq, vocab)
        """
        name = self.head_name()
        if self.tensors.dtype(name) == "F32":  # a view of the file: no copy
            return linear(h, self.tensors.f32(name))
        vocab = self.tensors.shape(name)[0]
        out = np.empty((h.shape[0], vocab), dtype=np.float32)
        for start in range(0, vocab, self._HEAD_ROWS):  # upcast a block of rows at a time
            stop = min(start + self._HEAD_ROWS, vocab)
            out[:, start:stop] = linear(h, self.tensors.f32(name, rows=np.arange(start, stop)))
        return out

    def head_name(self) -> str:
        """The tensor that maps final hidden states to logits.

        ``lm_head.weight`` (with or without the prefix), or the token embedding when
        ``tie_word_embeddings`` says the two are tied (when the config does not say, they are
        tied if the checkpoint has no ``lm_head.weight``).
        """
        head = next((n for n in (self.prefix + self.output_head, self.output_head)
                     if n in self.tensors), None)  # fmt: skip
        tied = self.config.get("tie_word_embeddings")
        if tied is None:
            tied = head is None
        if tied:
            return self.prefix + self.embedding
        if head is None:
            raise ValueError(
                f"{self.path}: config.json says tie_word_embeddings=false but "
                f"{self.tensors.file_names} has no {self.output_head}: the output layer is missing"
            )
        if self.tensors.shape(head)[1:] != (self.d_model,):
            raise ValueError(
                f"{self.path}: tensor {head!r} has shape {self.tensors.shape(head)}, expected "
                f"(vocab_size, d_model={self.d_model})"
            )
        return head

    def _find_prefix(self) -> str:
        for prefix in (*self.prefixes, ""):
            if prefix + self.embedding in self.tensors:
                return prefix
        raise ValueError(
            f"{self.path}: {self.tensors.file_names} has no tensor named '{self.embedding}' "
            f"(with an optional prefix {', '.join(repr(p) for p in self.prefixes)}): the "
            f"weights do not look like a {self.model_type!r} model, though config.json says so"
        )

    def _check_shapes(self) -> None:
        t = self.tensors
        for name, shape in self.expected_shapes().items():
            name = self.prefix + name
            if name not in t:
                raise ValueError(
                    f"{self.path}: tensor {name!r} is missing from {t.file_names} "
                    f"(config.json says {self.n_layers} layers of a {self.model_type!r} model)"
                )
            where = t.file(name).path.name
            if t.shape(name) != shape:
                raise ValueError(
                    f"{self.path}: config.json disagrees with the weights: tensor {name!r} in "
                    f"{where} has shape {t.shape(name)}, but config.json "
                    f"(d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads="
                    f"{self.n_kv_heads}, d_head={self.d_head}, d_ff={self.d_ff}, n_layers="
                    f"{self.n_layers}) implies {shape}"
                )
            if t.dtype(name) not in FLOAT_DTYPES:
                raise ValueError(
                    f"{self.path}: tensor {name!r} in {where} has dtype {t.dtype(name)}; "
                    f"weights must be one of {', '.join(FLOAT_DTYPES)}"
                )
