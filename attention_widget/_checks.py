"""Argument checks, raised at the public boundary with a sentence a student understands.

Every function names the argument it checks and says what was expected.  They are shared by
the engine, the export and the state files, so one kind of bad input gets one message.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np

__all__ = [
    "as_float_array",
    "as_sequence",
    "check_bias",
    "check_bool",
    "check_heads",
    "check_int",
    "check_mask",
    "check_memory",
    "check_positive",
    "check_sinks",
    "check_temperature",
    "check_variants",
    "overflow_error",
]


def check_int(name: str, value: object, *, minimum: int | None = 1) -> int:
    """``value`` as an int ``>= minimum`` (bools and floats are refused; None: any int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)


def check_heads(
    d_model: int, n_heads: object, n_kv_heads: object, d_kv: int | None = None
) -> tuple[int, int, int]:
    """``(n_heads, n_kv_heads, d_head)`` once the head counts divide evenly.

    ``n_kv_heads=None`` means one key/value head per query head.  ``d_kv``, when given, is the
    width of the key projection of the parameters: it must be ``n_kv_heads * d_head``.
    """
    n_heads = check_int("n_heads", n_heads)
    n_kv_heads = n_heads if n_kv_heads is None else check_int("n_kv_heads", n_kv_heads)
    if d_model % n_heads:
        divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}: each head gets "
            f"d_model / n_heads columns, so n_heads must be one of {divisors}"
        )
    if n_heads % n_kv_heads:
        divisors = [h for h in range(1, n_heads + 1) if n_heads % h == 0]
        raise ValueError(
            f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: query heads share "
            f"key/value heads in equal groups, so n_kv_heads must be one of {divisors}"
        )
    d_head = d_model // n_heads
    if d_kv is not None and d_kv != n_kv_heads * d_head:
        raise ValueError(
            f"params do not match n_heads={n_heads}, n_kv_heads={n_kv_heads}: w_k has {d_kv} "
            f"columns but n_kv_heads * d_head = {n_kv_heads} * {d_head} = {n_kv_heads * d_head}; "
            "make params with init_params(d_model, n_heads, n_kv_heads)"
        )
    return n_heads, n_kv_heads, d_head


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return v


def check_temperature(temperature: object) -> float:
    """The softmax temperature as a finite float ``> 0``."""
    return check_positive("temperature", temperature)


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool (True, False or a NumPy bool; not 0 or 1)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_sinks(sinks: object, n_heads: int) -> np.ndarray:
    """One finite sink logit per head, as a float64 array of shape ``(n_heads,)``."""
    arr = as_float_array("sinks", sinks)
    if arr.shape != (n_heads,):
        raise ValueError(f"sinks must hold one logit per head: shape (n_heads,) = ({n_heads},), "
                         f"got shape {arr.shape}")
    return arr


def as_float_array(name: str, value: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a finite float64 array (of ``shape``, if given), naming ``name`` in errors."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":  # floats, integers, booleans
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; every value must be finite")
    return arr


def as_sequence(x: object, d_model: int, dtype: object, name: str = "x") -> np.ndarray:
    """The input ``x`` (called ``name``) as a finite ``(seq_len, d_model)`` array of ``dtype``.

    No copy when ``x`` already is one.
    """
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        example = f" (for example {arr.flat[0]!r})" if arr.size else ""
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype}{example}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): it needs at least one token, a "
                         f"(1, {d_model}) row")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (seq_len, d_model), got {arr.ndim}-D shape {arr.shape}"
        )
    if arr.shape[1] != d_model:
        raise ValueError(
            f"{name} has width {arr.shape[1]} but params expect d_model={d_model}: "
            f"{name} must have shape (seq_len, {d_model})"
        )
    arr = arr.astype(dt, copy=False)
    # min and max are NaN if any entry is, infinite if one is (and need no temporary array)
    if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or infinity ({name}[{bad[0]}, {bad[1]}] = {arr[tuple(bad)]}); "
            "every value must be finite"
        )
    return arr


def check_mask(mask: object, n_q: int, n_k: int) -> np.ndarray | None:
    """A boolean ``(n_q, n_k)`` mask (True = may attend) with a key in every row.

    Returns None when every entry is True: that is no mask at all.
    """
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise TypeError(f"mask array must be boolean (True = may attend), got dtype {arr.dtype}")
    if arr.shape != (n_q, n_k):
        raise ValueError(
            f"mask must have shape (seq_len, seq_len) = ({n_q}, {n_k}), got {arr.shape}"
        )
    empty = np.flatnonzero(~arr.any(axis=1))
    if empty.size:
        raise ValueError(
            f"mask row {int(empty[0])} allows no key: every query must attend to at least one "
            "key (softmax over nothing is undefined)"
        )
    return None if arr.all() else arr


def check_memory(need: int, limit: int, what: str) -> None:
    """Refuse a call that would need more than ``limit`` bytes, before it allocates them."""
    if need > limit:
        raise ValueError(f"{what} would need about {need / 2**30:.1f} GiB (limit "
                         f"MEMORY_LIMIT_BYTES = {limit / 2**30:.1f} GiB): use a shorter "
                         "sequence, fewer heads or dtype=float32")


def overflow_error(dtype: object, inputs: str = "x") -> ValueError:
    """The error for a layer whose products overflowed ``dtype`` (its inputs were finite)."""
    return ValueError(f"the scores overflowed (values too large for {np.dtype(dtype)}): scale "
                      f"{inputs} or the weights down, or use dtype=float64")


def check_variants(
    n_heads: int, d_head: int, *, rope: object = None, alibi: object = False,
    softcap: object = None, sinks: object = None, top_k: object = None,
) -> tuple[float | None, bool, float | None, np.ndarray | None, int | None]:
    """The attention variants' arguments, checked: ``(rope, alibi, softcap, sinks, top_k)``.

    None (``alibi``: False) means the variant is off.  ``rope`` is the base theta, ``softcap``
    the cap ``c``, ``sinks`` one logit per head, ``top_k`` the keys kept per query.
    """
    if rope is not None:
        rope = check_positive("rope", rope)
        if d_head % 2:
            raise ValueError(f"rope turns pairs of features: it needs an even d_head, got "
                             f"d_head={d_head}")
    softcap = None if softcap is None else check_positive("softcap", softcap)
    sinks = None if sinks is None else check_sinks(sinks, n_heads)
    top_k = None if top_k is None else check_int("top_k", top_k)
    return rope, check_bool("alibi", alibi), softcap, sinks, top_k


def check_bias(bias: object, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``bias`` as finite values of ``dtype``, of a shape that broadcasts to ``shape``.

    No copy when ``bias`` already is an array of ``dtype``.
    """
    arr = np.asarray(bias)
    if arr.dtype.kind not in "fiub":  # floats, integers, booleans
        raise TypeError(f"bias must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim > len(shape) or any(
        b not in (1, s) for b, s in zip(arr.shape[::-1], shape[::-1], strict=False)
    ):
        raise ValueError(f"bias must broadcast to the scores' shape (n_heads, n_q, n_k) = "
                         f"{shape}, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # too large for dtype: infinite, reported below
        arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"bias contains NaN or infinity (in {np.dtype(dtype)}); every value "
                         "must be finite")
    return arr


def output_path(path: object, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` to write ``what`` to, in a folder that exists.

    TypeError for a path that is not a str or PathLike; FileNotFoundError, before anything is
    computed, when its folder is missing.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"cannot save {what} to {str(p)!r}: no folder {str(p.parent)!r}")
    return p
