"""A checkpoint folder's two sources of truth: ``config.json`` and the safetensors tensors.

:class:`Config` reads settings with errors that name the file and the field.
:class:`Tensors` finds every tensor by name, in one ``model.safetensors`` or in shards listed
by ``model.safetensors.index.json``, and hands them out as float32 (views of the memory-mapped
file when they are stored as float32, upcast copies otherwise).  Nothing is unpickled or
executed.
"""

from __future__ import annotations

import json
import mmap
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..safetensors_io import SafetensorsError, SafetensorsFile
from .blocks import ACTIVATIONS

__all__ = ["FLOAT_DTYPES", "Config", "Tensors", "held_bytes"]

#: Safetensors dtypes accepted for weights (all are computed in float32).
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")

_MISSING = object()


class Config:
    """``config.json`` of a checkpoint, read field by field.

    Parameters
    ----------
    path : pathlib.Path
        The file (named in every error).
    data : dict
        Its parsed content.
    """

    def __init__(self, path: Path, data: dict) -> None:
        self.path = path
        self.data = data

    def error(self, message: str) -> ValueError:
        """A ValueError whose message starts with the file: ``".../config.json: message"``."""
        return ValueError(f"{self.path}: {message}")

    def get(self, *keys: str, default: Any = _MISSING) -> Any:
        """The first of ``keys`` that is set (not null); ``default`` if none is.

        Raises
        ------
        ValueError
            If none is set and there is no default.
        """
        for key in keys:
            if self.data.get(key) is not None:
                return self.data[key]
        if default is _MISSING:
            names = " or ".join(repr(k) for k in keys)
            raise self.error(f"missing {names}, needed for model_type {self.data['model_type']!r}")
        return default

    def positive_int(self, *keys: str, default: Any = _MISSING) -> int:
        """Like :meth:`get`, for a field that must be an integer >= 1."""
        value = self.get(*keys, default=default)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise self.error(f"{keys[0]} must be a positive integer, got {value!r}")
        return int(value)

    def activation(self, *keys: str, default: str) -> Callable[[np.ndarray], np.ndarray]:
        """The activation function named by the first of ``keys`` (see ``blocks.ACTIVATIONS``)."""
        name = self.get(*keys, default=default)
        if name not in ACTIVATIONS:
            raise self.error(
                f"activation {name!r} is not supported (supported: {', '.join(ACTIVATIONS)})"
            )
        return ACTIVATIONS[name]

    def layer_windows(self, n_layers: int) -> list[int | None]:
        """Each layer's sliding window, from ``layer_types`` and ``sliding_window``.

        ``layer_types`` names each layer ``"sliding_attention"`` (its queries see the last
        ``sliding_window`` keys) or ``"full_attention"``; without it layers alternate, sliding
        first (Gemma 2's and gpt-oss's default).

        Returns
        -------
        list of int or None, one per layer (None: full attention)

        Raises
        ------
        ValueError
            For another layer type, a list of the wrong length or a missing window.
        """
        kinds = self.get("layer_types", default=None)
        if kinds is None:
            kinds = ["sliding_attention", "full_attention"] * (n_layers // 2 + 1)
            kinds = kinds[:n_layers]
        if not isinstance(kinds, list) or len(kinds) != n_layers:
            raise self.error(f"layer_types must list the kind of each of {n_layers} layers")
        unknown = sorted(set(kinds) - {"sliding_attention", "full_attention"})
        if unknown:
            raise self.error(
                f"layer_types {unknown} not supported (only 'sliding_attention' and "
                "'full_attention')"
            )
        if "sliding_attention" not in kinds:
            return [None] * n_layers
        window = self.positive_int("sliding_window")
        return [window if kind == "sliding_attention" else None for kind in kinds]

    def number(self, *keys: str, default: Any = _MISSING) -> float:
        """Like :meth:`get`, for a field that must be a real number."""
        value = self.get(*keys, default=default)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.error(f"{keys[0]} must be a number, got {value!r}")
        return float(value)


class Tensors:
    """All tensors of a checkpoint folder, from one file or from shards, looked up by name.

    Parameters
    ----------
    folder : pathlib.Path
        Holds ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.

    Raises
    ------
    FileNotFoundError
        If the folder has neither (pickled ``.bin`` checkpoints are never read).
    ValueError
        For a malformed index or a shard that lacks a tensor the index places in it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, tuple[str, str]] = {}  # name -> (file name, name in the file)
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        if single.is_file():
            f = SafetensorsFile(single)
            self._files[single.name] = f
            self._where = {n: (single.name, n) for n in f.keys()}
        elif index.is_file():
            self._read_index(index)
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

    def _read_index(self, index: Path) -> None:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{index}: not a valid safetensors index: expected JSON with a 'weight_map' "
                f"object ({err})"
            ) from None
        for name, fname in weight_map.items():
            if not isinstance(fname, str) or Path(fname).name != fname:
                raise ValueError(
                    f"{index}: shard name {fname!r} for tensor {name!r} is not a plain file name "
                    "in the same folder"
                )
            if fname not in self._files:
                self._files[fname] = SafetensorsFile(self.folder / fname)
            if name not in self._files[fname]:
                raise SafetensorsError(
                    f"{self.folder / fname}: has no tensor {name!r}, which {index.name} places "
                    "in it"
                )
            self._where[name] = (fname, name)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> list[str]:
        """Every tensor name (LayerNorm gamma/beta also under weight/bias)."""
        return list(self._where)

    def file(self, name: str) -> SafetensorsFile:
        """The file that holds tensor ``name``."""
        return self._files[self._where[name][0]]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name``."""
        return self.file(name).shape(self._where[name][1])

    def dtype(self, name: str) -> str:
        """Stored dtype of tensor ``name``, e.g. ``"F32"`` or ``"BF16"``."""
        return self.file(name).dtype(self._where[name][1])

    def f32(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Tensor ``name`` as float32: a view of the file for F32, an upcast copy otherwise.

        Parameters
        ----------
        name : str
        rows : ndarray of int, optional
            Read only these rows of the first axis (e.g. the embeddings of a few tokens).
        """
        arr = self.file(name).get(self._where[name][1], rows=rows)
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    def f32_stacked(self, names: list[str]) -> np.ndarray:
        """Tensors stacked along their first axis, as one new float32 array.

        How the fused ``[w_q; w_k; w_v]`` and ``[w_gate; w_up]`` weights are built: each part
        is converted straight into its rows.
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
        """The safetensors files, comma-separated (for messages)."""
        return ", ".join(sorted(self._files))


def _owns_memory(a: np.ndarray) -> bool:
    """Tell whether ``a`` holds RAM of its own (False for a view of a memory-mapped file)."""
    base: object = a
    while base is not None:
        if isinstance(base, mmap.mmap):
            return False
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return True


def held_bytes(arrays: dict[str, np.ndarray | None]) -> int:
    """RAM held by ``arrays``: each buffer of our own counted once, views of the file not at all.

    Parameters
    ----------
    arrays : dict of name -> ndarray or None
        For example a prepared layer (its fused matrices, views of the file, None for a
        missing bias).
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
