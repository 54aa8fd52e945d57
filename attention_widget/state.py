"""Save and load a widget state: settings, tokens and arrays in one ``.npz`` file, no pickle.

A state file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding

* ``meta``: UTF-8 JSON (as a uint8 array) with the format name and version, the settings,
  the tokens and the temperature;
* ``x``: the input as the user gave it;
* ``params_w_q`` ... ``params_b_o``: the layer's projections (when saved);
* ``trace_x`` ... ``trace_entropy``: every array of the :class:`AttentionTrace`, so a figure can
  be checked and reproduced exactly.

A :class:`~attention_widget.long.LongTrace` (a long prompt) has no ``(seq_len, seq_len)``
arrays, and its file (format version 2) keeps what reproduces it -- the settings, tokens, ``x``
and parameters -- and, to check the recomputed trace against, its small arrays:
``long_output``, ``long_entropy``, ``long_lse`` and the two overviews (NaN on masked tiles).

Loading never unpickles: every member's ``.npy`` header is read and checked (numeric dtype, sane
size) before its data, and ``allow_pickle=False`` throughout.  A corrupt, truncated or hand-edited
file raises ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import output_path
from .engine import MEMORY_LIMIT_BYTES, AttentionParams, AttentionTrace
from .long import LongTrace, overview_tile

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "StateFile", "load_state", "save_state", "verify_trace"]

#: Written in every state file's metadata; files without it are refused.
FORMAT_NAME = "attention_widget.state"
#: Version of the file layout.  Loading refuses newer (unknown) versions.
FORMAT_VERSION = 1
#: Version of a long trace's file layout (what reproduces it, and arrays to check it by).
LONG_FORMAT_VERSION = 2
#: A long trace's arrays kept to check the recomputed one by.
LONG_CHECKS = ("output", "entropy", "lse", "weights_overview", "scores_overview")
#: How far a recomputed long trace may differ from the saved one (float32 rounding).
LONG_RTOL, LONG_ATOL = 1e-4, 1e-6

#: The arrays of an AttentionTrace, in order, with their float/bool kind.
TRACE_ARRAYS = (
    "x", "q", "k", "v", "scores", "weights", "head_outputs", "concat", "output", "mask", "entropy",
)
#: The variants' arrays of an AttentionTrace, stored when present (None otherwise), and its
#: variants' settings, stored in the meta.
OPTIONAL_ARRAYS = ("x_kv", "latent", "sinks", "sink_weights", "kept")
VARIANT_SETTINGS = ("rope", "alibi", "softcap", "top_k")
_PARAM_NAMES = ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o")
_MAX_META_BYTES = 16 * 2**20  # settings + tokens: 16 MiB is far more than any sentence needs


@dataclass(frozen=True, eq=False)
class StateFile:
    """The contents of a state file written by :func:`save_state`.

    Attributes
    ----------
    path : str
        The file it was read from.
    version : int
        Format version of the file.
    settings : dict
        The settings saved (e.g. the widget's traits), as JSON values.
    tokens : list of str
        One label per token, length ``seq_len``.
    x : ndarray, shape (seq_len, d_model)
        The input as given by the user (dtype preserved).
    params : AttentionParams or None
        The layer's projections, when they were saved.
    trace : AttentionTrace or None
        The saved trace, rebuilt from the stored arrays (read-only arrays); None for a long
        trace's file.
    long_check : dict of str to ndarray, or None
        A long trace's arrays of :data:`LONG_CHECKS`, to check the recomputed one by.
    """

    path: str
    version: int
    settings: dict[str, Any]
    tokens: list[str]
    x: np.ndarray
    params: AttentionParams | None
    trace: AttentionTrace | None
    long_check: dict[str, np.ndarray] | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The stored trace arrays by name (``x, q, k, ..., entropy``; a long trace's checks)."""
        if self.long_check is not None:
            return {name: self.long_check[name] for name in LONG_CHECKS}
        return {name: getattr(self.trace, name) for name in TRACE_ARRAYS}


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"settings values must be JSON numbers, strings, lists or dicts, got {value!r}")


def _numeric(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; every value must be finite")
    return arr


def save_state(
    path: str | os.PathLike,
    settings: Mapping[str, Any],
    trace: AttentionTrace,
    tokens: Sequence[str],
    params: AttentionParams | None = None,
    x: Any = None,
) -> Path:
    """Write settings, tokens, input, parameters and trace to one ``.npz`` file (no pickle).

    Parameters
    ----------
    path : str or PathLike
        The file to write, exactly this name (conventionally ``.npz``).  Written atomically: a
        crash leaves the old file or the new one, never half of one.
    settings : dict
        JSON-serialisable settings (e.g. ``{"d_model": 64, "n_heads": 4, "mask": "causal"}``);
        NumPy scalars are converted.
    trace : AttentionTrace
        The trace on screen.
    tokens : list of str
        One label per token (length ``trace.seq_len``).
    params : AttentionParams, optional
        The projections that made ``trace``; needed to recompute it from ``x`` alone.
    x : array_like, shape (seq_len, d_model), optional
        The input as the user gave it (e.g. before a float32 cast); defaults to ``trace.x``.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    p = output_path(path, "the state")
    tokens = _checked_tokens(tokens, trace)
    long = isinstance(trace, LongTrace)
    if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
        raise TypeError(f"settings must be a dict with str keys, got {settings!r}")
    _check_params(params, trace)
    x_arr = trace.x if x is None else _numeric("x", x)
    if x_arr.shape != trace.x.shape:
        raise ValueError(f"x has shape {x_arr.shape} but the trace's input is {trace.x.shape}")
    meta = {
        "format": FORMAT_NAME,
        "version": LONG_FORMAT_VERSION if long else FORMAT_VERSION,
        "settings": dict(settings),
        "tokens": tokens,
        "temperature": float(trace.temperature),
        "variants": {} if long else {n: getattr(trace, n) for n in VARIANT_SETTINGS},
        "has_params": params is not None,
        "has_bias": bool(params is not None and params.b_q is not None),
    }
    arrays: dict[str, np.ndarray] = {"meta": _meta_bytes(meta), "x": np.ascontiguousarray(x_arr)}
    if params is not None:
        for name in _PARAM_NAMES:
            value = getattr(params, name)
            if value is not None:
                arrays[f"params_{name}"] = value
    for name in LONG_CHECKS if long else TRACE_ARRAYS:
        arrays[f"{'long' if long else 'trace'}_{name}"] = np.ascontiguousarray(
            getattr(trace, name))
    for name in () if long else OPTIONAL_ARRAYS:
        if getattr(trace, name) is not None:
            arrays[f"trace_{name}"] = np.ascontiguousarray(getattr(trace, name))
    return _write_atomically(p, arrays)


def _checked_tokens(tokens: Sequence[str], trace: AttentionTrace | LongTrace) -> list[str]:
    """``tokens`` as a list after checking it (and ``trace``'s type) for :func:`save_state`."""
    if not isinstance(trace, (AttentionTrace, LongTrace)):
        raise TypeError(f"trace must be an AttentionTrace or LongTrace, got "
                        f"{type(trace).__name__}")
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"tokens must be a list of str, got {type(tokens).__name__}")
    tokens = list(tokens)
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of str")
    if len(tokens) != trace.seq_len:
        raise ValueError(
            f"tokens has {len(tokens)} entries but the trace has seq_len={trace.seq_len}"
        )
    return tokens


def _check_params(params: AttentionParams | None, trace: AttentionTrace | LongTrace) -> None:
    """Raise unless ``params`` is None or has the shapes that made ``trace``."""
    if params is not None and not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams or None, got {type(params).__name__}")
    if params is not None and (
        params.d_model != trace.d_model or params.d_kv != trace.n_kv_heads * trace.d_head
    ):
        raise ValueError(
            f"params (d_model={params.d_model}, w_k columns={params.d_kv}) do not match the "
            f"trace (d_model={trace.d_model}, n_kv_heads * d_head="
            f"{trace.n_kv_heads * trace.d_head})"
        )


def _meta_bytes(meta: dict[str, Any]) -> np.ndarray:
    """``meta`` as UTF-8 JSON bytes (uint8 array); a ValueError if the settings are not JSON."""
    try:
        text = json.dumps(meta, allow_nan=False, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"settings cannot be saved as JSON: {err}") from None
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write_atomically(p: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``p`` as a compressed ``.npz``: the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: savez adds no ".npz" suffix
            np.savez_compressed(f, allow_pickle=False, **arrays)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A problem with the file's contents (turned into ValueError naming the file)."""


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, headers checked before any data is read."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise _Bad(f"not a NumPy .npz archive ({type(err).__name__}: {err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _Bad("a single .npy array, not an .npz archive of a saved state")
    with npz:
        zf: zipfile.ZipFile = npz.zip
        out: dict[str, np.ndarray] = {}
        infos = zf.infolist()
        if len(infos) > 64:
            raise _Bad(f"{len(infos)} members in the archive; a state file has at most 21")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise _Bad(f"unexpected member {name!r} (not an .npy array)")
            key = name[:-4]
            if key in out:
                raise _Bad(f"the member {name!r} appears twice")
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unknown .npy version {version}")
            except Exception as err:
                raise _Bad(f"member {key!r} is not a valid .npy array ({err})") from None
            if dtype.hasobject or dtype.kind not in "biuf":
                # checked before reading the data: object arrays are never unpickled
                raise _Bad(
                    f"member {key!r} has dtype {dtype} (Python objects or text); a state file "
                    "holds only numbers, so it is refused without reading it"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MEMORY_LIMIT_BYTES:
                raise _Bad(f"member {key!r} claims shape {shape} ({nbytes} bytes): too large")
            try:
                out[key] = npz[key]
            except Exception as err:
                raise _Bad(
                    f"member {key!r} is corrupt or truncated ({type(err).__name__}: {err})"
                ) from None
    return out


def _float_array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise _Bad(f"the array {key!r} is missing")
    arr = arrays[key]
    if arr.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise _Bad(f"array {key!r} has dtype {arr.dtype}; expected float32 or float64")
    if arr.shape != shape:
        raise _Bad(f"array {key!r} has shape {arr.shape}; expected {shape}")
    if arr.size and not np.isfinite(arr).all():
        raise _Bad(f"array {key!r} contains NaN or infinity")
    return arr


def _parse_meta(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if "meta" not in arrays:
        raise _Bad("no 'meta' entry: not written by attention_widget.save_state")
    raw = arrays["meta"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _Bad(f"'meta' must be a 1-D uint8 array of JSON text, got {raw.dtype} {raw.shape}")
    if raw.size > _MAX_META_BYTES:
        raise _Bad(f"'meta' is {raw.size} bytes; at most {_MAX_META_BYTES} are allowed")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _Bad(f"'meta' is not valid UTF-8 JSON ({err})") from None
    if not isinstance(meta, dict):
        raise _Bad("'meta' must be a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise _Bad(f"'meta' has format {meta.get('format')!r}; expected {FORMAT_NAME!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Bad(f"'meta' has version {version!r}; expected an integer")
    if version not in (FORMAT_VERSION, LONG_FORMAT_VERSION):
        raise _Bad(
            f"format version {version}, but this attention_widget reads versions "
            f"{FORMAT_VERSION} and {LONG_FORMAT_VERSION} (upgrade attention_widget to read newer "
            "files)"
        )
    if not isinstance(meta.get("settings"), dict):
        raise _Bad("'meta.settings' must be a JSON object")
    tokens = meta.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise _Bad("'meta.tokens' must be a list of strings")
    t = meta.get("temperature")
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
        raise _Bad(f"'meta.temperature' must be a finite number > 0, got {t!r}")
    for key in ("has_params", "has_bias"):
        if not isinstance(meta.get(key), bool):
            raise _Bad(f"'meta.{key}' must be true or false, got {meta.get(key)!r}")
    return meta


def _params(arrays: dict[str, np.ndarray], meta: dict[str, Any], d_model: int, d_kv: int
            ) -> AttentionParams | None:
    """The stored projections (None if none were saved), their shapes checked."""
    if not meta["has_params"]:
        return None
    pshapes = {
        "w_q": (d_model, d_model),
        "w_k": (d_model, d_kv),
        "w_v": (d_model, d_kv),
        "w_o": (d_model, d_model),
        "b_q": (d_model,),
        "b_k": (d_kv,),
        "b_v": (d_kv,),
        "b_o": (d_model,),
    }
    pvals = {
        name: _float_array(arrays, f"params_{name}", pshapes[name])
        for name in _PARAM_NAMES
        if f"params_{name}" in arrays
    }
    try:
        return AttentionParams(**pvals)
    except (TypeError, ValueError) as err:
        raise _Bad(f"stored params are invalid ({err})") from None


def _members(arrays: dict[str, np.ndarray], meta: dict[str, Any], names: list[str]) -> None:
    """Check that the archive holds exactly ``names`` and the params the meta announces."""
    expected = set(names)
    if meta["has_params"]:
        expected |= {f"params_{n}" for n in (_PARAM_NAMES if meta["has_bias"]
                                             else _PARAM_NAMES[:4])}
    missing = sorted(expected - arrays.keys())
    if missing:
        raise _Bad(f"missing array(s) {missing}")
    extra = sorted(arrays.keys() - expected)
    if extra:
        raise _Bad(f"unexpected array(s) {extra}")


def _parse_long(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> StateFile:
    """A long trace's file: settings, tokens, x, params and the arrays to check it by."""
    _members(arrays, meta, ["meta", "x", *(f"long_{n}" for n in LONG_CHECKS)])
    x, entropy = arrays["x"], arrays["long_entropy"]
    if x.ndim != 2 or entropy.ndim != 2 or x.shape[0] != entropy.shape[1] or not x.size:
        raise _Bad(f"arrays 'x' {x.shape} and 'long_entropy' {entropy.shape} do not fit together")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise _Bad("array 'x' contains NaN or infinity")
    (n, d_model), n_heads = x.shape, entropy.shape[0]
    if len(meta["tokens"]) != n:
        raise _Bad(f"{len(meta['tokens'])} tokens but the arrays have seq_len={n}")
    side = -(-n // overview_tile(n))
    check = {"entropy": _float_array(arrays, "long_entropy", (n_heads, n)),
             "lse": _float_array(arrays, "long_lse", (n_heads, n))}
    check["output"] = _float_array(arrays, "long_output", (n, arrays["long_output"].shape[-1]))
    for name in ("weights_overview", "scores_overview"):  # NaN: a masked tile
        arr = arrays[f"long_{name}"]
        if arr.shape != (n_heads, side, side) or arr.dtype.kind != "f" or np.isinf(arr).any():
            raise _Bad(f"array 'long_{name}' must be finite or NaN of shape "
                       f"{(n_heads, side, side)}, got {arr.dtype} {arr.shape}")
        check[name] = arr
    params = _params(arrays, meta, d_model, arrays.get("params_w_k", np.zeros((0, 0))).shape[-1])
    for arr in (*check.values(), x):
        arr.setflags(write=False)
    return StateFile(path=str(path), version=int(meta["version"]), settings=meta["settings"],
                     tokens=list(meta["tokens"]), x=x, params=params, trace=None,
                     long_check={**check, "temperature": float(meta["temperature"])})


def _parse(path: Path) -> StateFile:
    arrays = _read_members(path)
    meta = _parse_meta(arrays)
    if meta["version"] == LONG_FORMAT_VERSION:
        return _parse_long(path, arrays, meta)
    optional = [f"trace_{n}" for n in OPTIONAL_ARRAYS if f"trace_{n}" in arrays]
    _members(arrays, meta, ["meta", "x", *(f"trace_{n}" for n in TRACE_ARRAYS), *optional])

    # sizes from the trace's own arrays, then every shape checked against them
    tx = arrays["trace_x"]
    tq = arrays["trace_q"]
    tk = arrays["trace_k"]
    if tx.ndim != 2 or tq.ndim != 3 or tk.ndim != 3:
        raise _Bad(
            f"trace arrays have the wrong number of dimensions (x {tx.shape}, q {tq.shape}, "
            f"k {tk.shape})"
        )
    seq_len, d_model = tx.shape
    n_heads, _, d_qk = tq.shape  # (latent attention's q and k add the rotary part)
    n_kv, n_keys = tk.shape[:2]  # (cross-attention's keys are the source's tokens)
    tv = arrays["trace_v"]
    d_head = tv.shape[-1] if tv.ndim == 3 else 0
    if seq_len == 0 or n_heads == 0 or n_kv == 0 or d_head == 0 or n_keys == 0:
        raise _Bad(f"trace arrays are empty (x {tx.shape}, q {tq.shape}, k {tk.shape}, "
                   f"v {tv.shape})")
    if n_heads * d_head != d_model or n_heads % n_kv or d_qk < d_head:
        raise _Bad(
            f"trace sizes are inconsistent: n_heads={n_heads} * d_head={d_head} must equal "
            f"d_model={d_model} and n_kv_heads={n_kv} must divide n_heads"
        )
    if len(meta["tokens"]) != seq_len:
        raise _Bad(f"{len(meta['tokens'])} tokens but the arrays have seq_len={seq_len}")
    shapes = {
        "x": (seq_len, d_model),
        "q": (n_heads, seq_len, d_qk),
        "k": (n_kv, n_keys, d_qk),
        "v": (n_kv, n_keys, d_head),
        "scores": (n_heads, seq_len, n_keys),
        "weights": (n_heads, seq_len, n_keys),
        "head_outputs": (n_heads, seq_len, d_head),
        "concat": (seq_len, d_model),
        "output": (seq_len, d_model),
        "entropy": (n_heads, seq_len),
    }
    trace_arrays: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        trace_arrays[name] = _float_array(arrays, f"trace_{name}", shape)
    dtypes = {a.dtype for a in trace_arrays.values()}
    if len(dtypes) != 1:
        raise _Bad(f"trace arrays mix dtypes {sorted(str(d) for d in dtypes)}")
    mask = arrays["trace_mask"]
    if mask.dtype != np.bool_ or mask.shape != (seq_len, n_keys):
        raise _Bad(
            f"array 'trace_mask' must be bool of shape {(seq_len, n_keys)}, got "
            f"{mask.dtype} {mask.shape}"
        )
    if not mask.any(axis=1).all():
        raise _Bad("array 'trace_mask' has a row that allows no key")
    trace_arrays["mask"] = mask
    x = arrays["x"]
    if x.shape != (seq_len, d_model):
        raise _Bad(f"array 'x' has shape {x.shape}; expected {(seq_len, d_model)}")
    if x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
        raise _Bad("array 'x' contains NaN or infinity")
    params = _params(arrays, meta, d_model, n_kv * d_head)
    for arr in (*trace_arrays.values(), x):
        arr.setflags(write=False)
    trace = AttentionTrace(temperature=float(meta["temperature"]), **trace_arrays,
                           **_variants(arrays, meta))
    return StateFile(
        path=str(path),
        version=int(meta["version"]),
        settings=meta["settings"],
        tokens=list(meta["tokens"]),
        x=x,
        params=params,
        trace=trace,
    )


def load_state(path: str | os.PathLike) -> StateFile:
    """Read a state file written by :func:`save_state`, checking everything in it.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file.

    Returns
    -------
    StateFile
        Settings, tokens, ``x``, ``params`` (or None) and the stored trace.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a state file, is corrupt or truncated, or was edited into something
        inconsistent (missing or extra arrays, wrong dtypes or shapes, NaN, bad JSON, an unknown
        format version, an object array).  The message names the file and the problem.
        Nothing in the file is ever executed or unpickled.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"state file {str(p)!r} does not exist")
    try:
        return _parse(p)
    except _Bad as err:
        raise ValueError(f"cannot load state file {str(p)!r}: {err}") from None


def _variants(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """The trace's variant settings and arrays as stored (their shapes the engine's own)."""
    saved = meta.get("variants", {})
    if not isinstance(saved, dict) or not set(saved) <= set(VARIANT_SETTINGS):
        raise _Bad(f"'meta.variants' must be a dict of {VARIANT_SETTINGS}, got {saved!r}")
    out: dict[str, Any] = dict(saved)
    for name in OPTIONAL_ARRAYS:
        if f"trace_{name}" in arrays:
            out[name] = arrays[f"trace_{name}"]
            out[name].setflags(write=False)
    return out


def verify_trace(state: StateFile, trace: AttentionTrace) -> None:
    """Check that a recomputed trace is bit-for-bit the one stored in a state file.

    Parameters
    ----------
    state : StateFile
        From :func:`load_state`.
    trace : AttentionTrace
        Recomputed from ``state.settings``, ``state.x`` and ``state.params``.

    Raises
    ------
    ValueError
        Naming the file and the first stage that differs (dtype, shape, or values with the
        largest difference), or the temperature.
    """
    if not isinstance(state, StateFile):
        raise TypeError(f"state must be a StateFile from load_state, got {type(state).__name__}")
    if state.long_check is not None:
        return _verify_long(state, trace)
    if not isinstance(trace, AttentionTrace):
        raise TypeError(f"trace must be an AttentionTrace, got {type(trace).__name__}")
    where = f"state file {state.path!r}"
    if trace.temperature != state.trace.temperature:
        raise ValueError(
            f"{where}: temperature {trace.temperature!r} differs from the saved "
            f"{state.trace.temperature!r}"
        )
    # inputs first (x, then the mask), so the message names the cause, not a consequence
    for name in VARIANT_SETTINGS:
        if getattr(trace, name) != getattr(state.trace, name):
            raise ValueError(f"{where}: recomputed {name}={getattr(trace, name)!r} differs from "
                             f"the saved {getattr(state.trace, name)!r}")
    inputs = ("x", "x_kv", "sinks", "mask")
    order = (*inputs, *(n for n in (*TRACE_ARRAYS, *OPTIONAL_ARRAYS) if n not in inputs))
    for name in order:
        saved, new = getattr(state.trace, name), getattr(trace, name)
        if saved is None or new is None:
            if saved is not new:
                raise ValueError(f"{where}: recomputed {name} is {'' if new is None else 'not '}"
                                 "None, unlike the saved one")
            continue
        if saved.shape != new.shape:
            raise ValueError(
                f"{where}: recomputed {name} has shape {new.shape}, saved {saved.shape}"
            )
        if saved.dtype != new.dtype:
            raise ValueError(
                f"{where}: recomputed {name} has dtype {new.dtype}, saved {saved.dtype}"
            )
        if not np.array_equal(saved, new):
            diff = (
                float(np.max(np.abs(saved.astype(np.float64) - new.astype(np.float64))))
                if saved.dtype != np.bool_
                else float(np.count_nonzero(saved != new))
            )
            raise ValueError(
                f"{where}: recomputed {name} differs from the saved one (largest difference "
                f"{diff:.3g}); the file was edited or made by a different engine version"
            )


def _verify_long(state: StateFile, trace: object) -> None:
    """A recomputed long trace against the arrays its file keeps (to float32 rounding)."""
    where = f"state file {state.path!r}"
    if not isinstance(trace, LongTrace):
        raise ValueError(f"{where} holds a long trace, but the recomputed trace is a "
                         f"{type(trace).__name__}")
    saved = state.long_check
    if trace.temperature != saved["temperature"]:
        raise ValueError(f"{where}: temperature {trace.temperature!r} differs from the saved "
                         f"{saved['temperature']!r}")
    for name in LONG_CHECKS:
        old, new = saved[name], getattr(trace, name)
        if old.shape != new.shape:
            raise ValueError(f"{where}: recomputed {name} has shape {new.shape}, saved "
                             f"{old.shape}")
        if not np.allclose(old, new, rtol=LONG_RTOL, atol=LONG_ATOL, equal_nan=True):
            diff = float(np.nanmax(np.abs(old.astype(np.float64) - new)))
            raise ValueError(f"{where}: recomputed {name} differs from the saved one (largest "
                             f"difference {diff:.3g}); the file was edited or made by a "
                             "different engine version")
