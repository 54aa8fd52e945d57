"""Read ``.safetensors`` checkpoints with NumPy alone, memory-mapped and lazily.

The format (https://github.com/huggingface/safetensors) is deliberately simple:

1. 8 bytes: ``N``, the length of the header, an unsigned little-endian 64-bit integer;
2. ``N`` bytes: a JSON object ``{name: {"dtype": "F32", "shape": [..],
   "data_offsets": [begin, end]}, ..., "__metadata__": {...}}``;
3. the data: every tensor's bytes, little-endian, C order, at ``data_offsets`` counted from the
   end of the header.

Nothing is ever executed or unpickled: the header is parsed with :func:`json.loads` and the
data is only ever viewed as numbers.  The whole header is validated when the file is opened, so
a truncated or corrupt file fails at once with a :class:`SafetensorsError` naming the file and
the problem, before any tensor is used.

NumPy has no bfloat16: ``BF16`` tensors are returned as float32, which is exact (a bfloat16 is
the upper half of a float32, so the upcast is a 16-bit shift).  ``F32`` and the other NumPy
dtypes are returned as read-only views of the memory map, so opening a file costs no memory and
only the tensors actually used are read from disk.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["DTYPES", "SafetensorsError", "SafetensorsFile", "bf16_to_float32"]

#: Safetensors dtype names this reader understands, and how their bytes are viewed in NumPy.
#: ``BF16`` is viewed as ``uint16`` bit patterns and upcast to float32 on access.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# The reference implementation refuses headers above 100 MB; so do we (a corrupt length field
# would otherwise make us read gigabytes as "JSON").
_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """A ``.safetensors`` file is truncated, corrupt or holds something this reader cannot read.

    The message always names the file.
    """


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Upcast bfloat16 bit patterns to float32, bit-exactly.

    Parameters
    ----------
    bits : ndarray of uint16, any shape
        Raw bfloat16 values (the upper 16 bits of the float32 they stand for).

    Returns
    -------
    ndarray of float32, same shape
        A new array; NaN, infinities and subnormals are preserved.
    """
    bits = np.asarray(bits)
    if bits.dtype.kind != "u" or bits.dtype.itemsize != 2:
        raise TypeError(f"bits must be a uint16 array of bfloat16 bit patterns, got {bits.dtype}")
    out = np.empty(bits.shape, dtype=np.float32)
    _bf16_into(bits, out)
    return out


def _bf16_into(bits: np.ndarray, out: np.ndarray) -> None:
    """Write the float32 values of bfloat16 ``bits`` into ``out`` in one pass."""
    np.left_shift(bits, 16, out=out.view(np.uint32), dtype=np.uint32)


class SafetensorsFile:
    """One ``.safetensors`` file, memory-mapped; tensors are read by name when asked for.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SafetensorsError
        If the file is truncated, its header length points beyond the file, the header is not
        valid JSON, a tensor has an unknown dtype, a shape that does not match its byte size, or
        ``data_offsets`` outside the data.  The message names the file and the tensor.

    Examples
    --------
    >>> f = SafetensorsFile("model.safetensors")  # doctest: +SKIP
    >>> f.shape("embeddings.word_embeddings.weight")  # doctest: +SKIP
    (30522, 384)
    >>> w = f.get("embeddings.word_embeddings.weight", rows=[101, 102])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such safetensors file")
        size = self.path.stat().st_size
        if size < 8:
            raise SafetensorsError(
                f"{self.path}: truncated file ({size} bytes): a safetensors file starts with an "
                "8-byte header length"
            )
        with open(self.path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n > _MAX_HEADER:
                raise SafetensorsError(
                    f"{self.path}: corrupt header: its length field says {n} bytes (more than "
                    f"the {_MAX_HEADER} allowed); this is not a safetensors file or it is damaged"
                )
            if 8 + n > size:
                raise SafetensorsError(
                    f"{self.path}: truncated file: the header length field says {n} bytes but "
                    f"the file has only {size - 8} bytes after it"
                )
            raw = fh.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SafetensorsError(
                f"{self.path}: corrupt header: the {n}-byte header is not valid JSON ({err})"
            ) from None
        if not isinstance(header, dict):
            raise SafetensorsError(
                f"{self.path}: corrupt header: expected a JSON object, got {type(header).__name__}"
            )
        metadata = header.pop("__metadata__", None)
        self.metadata: dict[str, str] = dict(metadata) if isinstance(metadata, dict) else {}
        self._data_start = 8 + n
        data_size = size - self._data_start
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self._entries[name] = self._check_entry(name, info, data_size)
        self._mmap: mmap.mmap | None = None

    # ----------------------------------------------------------------------------------------
    def _check_entry(
        self, name: str, info: object, data_size: int
    ) -> tuple[str, tuple[int, ...], int, int]:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise SafetensorsError(
                f"{where}: corrupt header entry {info!r}: expected dtype, shape and data_offsets"
            )
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(
                f"{where}: unknown or unsupported dtype {dtype!r}; this reader understands "
                f"{', '.join(DTYPES)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise SafetensorsError(
                f"{where}: corrupt shape {shape!r}: expected a list of ints >= 0"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise SafetensorsError(
                f"{where}: corrupt data_offsets {offsets!r}: expected [begin, end] with "
                "0 <= begin <= end"
            )
        begin, end = offsets
        if end > data_size:
            raise SafetensorsError(
                f"{where}: data_offsets [{begin}, {end}] lie outside the data, which has only "
                f"{data_size} bytes (the file is truncated or corrupt)"
            )
        expected = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise SafetensorsError(
                f"{where}: shape {tuple(shape)} of {dtype} needs {expected} bytes but "
                f"data_offsets [{begin}, {end}] hold {end - begin}"
            )
        return dtype, tuple(shape), begin, end

    def _buffer(self) -> mmap.mmap:
        if self._mmap is None:
            with open(self.path, "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def _entry(self, name: str) -> tuple[str, tuple[int, ...], int, int]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    # ----------------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Names of the tensors, in header order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, {len(self)} tensors)"

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name`` (read from the header; no data is touched)."""
        return self._entry(name)[1]

    def dtype(self, name: str) -> str:
        """Safetensors dtype name of tensor ``name``, e.g. ``"BF16"``."""
        return self._entry(name)[0]

    def nbytes(self, name: str) -> int:
        """Bytes tensor ``name`` occupies in the file."""
        _, _, begin, end = self._entry(name)
        return end - begin

    def raw(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a read-only view of the file, in its stored dtype.

        Returns
        -------
        ndarray, shape ``self.shape(name)``
            ``BF16`` tensors come back as their ``uint16`` bit patterns (see
            :func:`bf16_to_float32`).  No bytes are copied; pages are read from disk when
            touched.
        """
        dtype, shape, begin, end = self._entry(name)
        np_dtype = DTYPES[dtype]
        count = (end - begin) // np_dtype.itemsize
        if count == 0:
            return np.zeros(shape, dtype=np_dtype)
        arr = np.frombuffer(
            self._buffer(), dtype=np_dtype, count=count, offset=self._data_start + begin
        )
        return arr.reshape(shape)

    def get(self, name: str, *, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Tensor ``name`` as a NumPy array; ``BF16`` upcast to float32.

        Parameters
        ----------
        name : str
            Tensor name, as in the header.
        rows : sequence of int, optional
            Read only these rows (indices into the first axis), e.g. the embeddings of a few
            token ids out of a vocabulary of 150,000.

        Returns
        -------
        ndarray
            ``F32``, ``F64`` and integer tensors without ``rows``: a read-only view of the memory
            map (no copy).  ``BF16``: a new float32 array (exact).  ``F16``: a new float32 array
            (exact).  With ``rows``: a new array of shape ``(len(rows), *shape[1:])``.

        Raises
        ------
        KeyError
            If the file has no such tensor.
        IndexError
            If a row index is out of range.
        """
        dtype, shape, _, _ = self._entry(name)
        arr = self.raw(name)
        if rows is not None:
            idx = np.asarray(rows, dtype=np.intp)
            if not shape or (idx.size and (idx.min() < -shape[0] or idx.max() >= shape[0])):
                raise IndexError(
                    f"{self.path}: tensor {name!r} of shape {shape} has no rows {idx.tolist()}"
                )
            arr = arr[idx]
        if dtype == "BF16":
            return bf16_to_float32(arr)
        if dtype == "F16":
            return arr.astype(np.float32)
        return arr

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Write tensor ``name``, converted to ``out.dtype``, into the array ``out``.

        One pass over the data and no temporary: used to upcast ``BF16`` weights straight into
        a slice of a larger float32 array (for example a fused ``[w_q; w_k; w_v]``).

        Parameters
        ----------
        name : str
            Tensor name.
        out : ndarray, shape ``self.shape(name)``, writable; float32 for ``BF16`` tensors

        Returns
        -------
        ndarray
            ``out``.
        """
        dtype, shape, _, _ = self._entry(name)
        if out.shape != shape:
            raise ValueError(
                f"{self.path}: tensor {name!r} has shape {shape}, cannot read it into an array "
                f"of shape {out.shape}"
            )
        if dtype == "BF16":
            if out.dtype != np.float32 or not out.flags.c_contiguous:
                raise TypeError(f"out must be a C-contiguous float32 array, got {out.dtype}")
            _bf16_into(self.raw(name), out)
        else:
            np.copyto(out, self.raw(name), casting="same_kind")
        return out

    def close(self) -> None:
        """Release the memory map (arrays handed out earlier keep it alive until they go)."""
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # views still exist; the map closes when they are collected
                pass
            self._mmap = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
