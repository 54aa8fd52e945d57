"""save_state / load_state: exact round trips, and clear errors for every kind of bad file."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attention_widget import (
    AttentionParams,
    AttentionTrace,
    embed,
    init_params,
    multi_head_attention,
    tokenize,
)
from attention_widget.state import (
    FORMAT_VERSION,
    OPTIONAL_ARRAYS,
    TRACE_ARRAYS,
    VARIANT_SETTINGS,
    StateFile,
    load_state,
    save_state,
    verify_trace,
)

TEXT = "The cat sat on the mat because it was tired."
SETTINGS = {
    "text": TEXT,
    "d_model": 32,
    "n_heads": 4,
    "n_kv_heads": 2,
    "temperature": 0.7,
    "mask": "causal",
    "window": 3,
    "seed": 5,
    "positional": True,
    "colormap": "viridis",
}


def _compute(x, params, dtype=np.float64):
    return multi_head_attention(
        x, params, n_heads=4, n_kv_heads=2, temperature=0.7, mask="causal", dtype=dtype
    )


@pytest.fixture(scope="module")
def case():
    tokens = tokenize(TEXT)
    x = embed(tokens, 32, seed=5)
    params = init_params(32, 4, 2, seed=5, bias=True)
    return tokens, x, params, _compute(x, params)


@pytest.fixture
def saved(tmp_path, case):
    tokens, x, params, trace = case
    path = save_state(tmp_path / "state.npz", SETTINGS, trace, tokens, params=params, x=x)
    return path


def _raw(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _meta(arrays):
    return json.loads(arrays["meta"].tobytes().decode("utf-8"))


def _with_meta(arrays, meta):
    out = dict(arrays)
    out["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return out


def _write(path: Path, arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------
def test_every_trace_field_is_saved():
    """If the engine adds a field to AttentionTrace, the state format must learn it."""
    names = {f.name for f in dataclasses.fields(AttentionTrace)}
    assert names == {*TRACE_ARRAYS, *OPTIONAL_ARRAYS, *VARIANT_SETTINGS, "temperature"}


def test_round_trip_is_identical(saved, case):
    tokens, x, params, trace = case
    state = load_state(saved)
    assert isinstance(state, StateFile)
    assert state.version == FORMAT_VERSION
    assert state.settings == SETTINGS
    assert state.tokens == tokens
    assert state.x.dtype == x.dtype and np.array_equal(state.x, x)
    for name in TRACE_ARRAYS:
        a, b = getattr(state.trace, name), getattr(trace, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), name
    assert state.trace.temperature == trace.temperature
    assert set(state.arrays) == set(TRACE_ARRAYS)
    for name in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o"):
        assert np.array_equal(getattr(state.params, name), getattr(params, name)), name
    # and the widget's check: recompute from the loaded settings, x and params
    verify_trace(state, _compute(state.x, state.params))


def test_round_trip_from_user_arrays_float32_and_no_bias(tmp_path):
    rng = np.random.default_rng(0)
    tokens = ["a", "b", "a", "<c>", "d"]
    x = rng.integers(-3, 4, size=(5, 8))  # integer user input, cast by the engine
    params = AttentionParams(*(rng.standard_normal((8, 8)) for _ in range(4)))
    trace = multi_head_attention(x, params, n_heads=2, temperature=2.5, dtype=np.float32)
    path = save_state(tmp_path / "s.npz", {"n_heads": 2}, trace, tokens, params=params, x=x)
    state = load_state(path)
    assert state.x.dtype == x.dtype and np.array_equal(state.x, x)
    assert state.params is not None and state.params.b_q is None
    assert state.trace.weights.dtype == np.float32
    again = multi_head_attention(
        state.x, state.params, n_heads=2, temperature=2.5, dtype=np.float32
    )
    verify_trace(state, again)
    assert state.tokens == tokens


def test_without_params_and_exact_file_name(tmp_path, case):
    tokens, _, _, trace = case
    path = save_state(tmp_path / "state.bin", {}, trace, tokens)
    assert path == tmp_path / "state.bin" and path.exists()  # no ".npz" appended
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temp file left behind
    state = load_state(path)
    assert state.params is None
    assert np.array_equal(state.x, trace.x)


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is reused; files are overwritten
_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    settings_=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            _JSON_LEAF,
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=4), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=5,
    ),
    tokens=st.lists(st.text(max_size=12), min_size=11, max_size=11),
)
def test_any_json_settings_and_any_token_text_round_trip(tmp_path, case, settings_, tokens):
    _, _, _, trace = case
    path = save_state(tmp_path / "h.npz", settings_, trace, tokens)
    state = load_state(path)
    assert state.settings == settings_
    assert state.tokens == tokens


def test_verify_trace_detects_any_difference(saved, case):
    _, x, params, _ = case
    state = load_state(saved)
    other_t = multi_head_attention(
        x, params, n_heads=4, n_kv_heads=2, temperature=0.71, mask="causal"
    )
    with pytest.raises(ValueError, match="temperature"):
        verify_trace(state, other_t)
    nudged = x.copy()
    nudged[3, 7] = np.nextafter(nudged[3, 7], np.inf)  # one ulp in one input value
    with pytest.raises(ValueError, match=r"recomputed x differs"):
        verify_trace(state, _compute(nudged, params))
    with pytest.raises(ValueError, match="dtype"):
        verify_trace(state, _compute(x, params, dtype=np.float32))
    with pytest.raises(ValueError, match="mask"):
        verify_trace(
            state,
            multi_head_attention(
                x, params, n_heads=4, n_kv_heads=2, temperature=0.7, mask="sliding", window=3
            ),
        )


def test_save_rejects_bad_arguments(tmp_path, case):
    tokens, x, _, trace = case
    with pytest.raises(ValueError, match="settings"):
        save_state(tmp_path / "a.npz", {"f": float("nan")}, trace, tokens)
    with pytest.raises(ValueError, match="settings"):
        save_state(tmp_path / "a.npz", {"f": object()}, trace, tokens)
    with pytest.raises(ValueError, match="tokens has 3 entries"):
        save_state(tmp_path / "a.npz", {}, trace, ["a", "b", "c"])
    with pytest.raises(ValueError, match="x has shape"):
        save_state(tmp_path / "a.npz", {}, trace, tokens, x=x[:3])
    with pytest.raises(ValueError, match="params"):
        save_state(tmp_path / "a.npz", {}, trace, tokens, params=init_params(16, 4))
    with pytest.raises(TypeError, match="trace"):
        save_state(tmp_path / "a.npz", {}, "not a trace", tokens)
    with pytest.raises(FileNotFoundError, match=r"no folder '.*missing'"):
        save_state(tmp_path / "missing" / "a.npz", {}, trace, tokens)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(TypeError, match="x must be an array of real numbers"):
        save_state(tmp_path / "a.npz", {}, trace, tokens, x=np.array([["a"] * 32] * 11))
    assert not (tmp_path / "a.npz").exists()


# --------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------
def _expect_error(path: Path, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        load_state(path)
    message = str(info.value)
    assert str(path) in message  # names the file
    return message


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_state(tmp_path / "nope.npz")


def test_truncated_files(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 10, 100, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        _expect_error(bad, "cannot load state file")


def test_not_an_archive(tmp_path, case):
    text = tmp_path / "notes.npz"
    text.write_text("just some text\n")
    _expect_error(text, "not a NumPy .npz archive")
    single = tmp_path / "single.npz"
    np.save(single.open("wb"), np.zeros(3))
    _expect_error(single, "single .npy array")
    foreign = tmp_path / "foreign.npz"
    _write(foreign, {"a": np.zeros(3)})
    _expect_error(foreign, "no 'meta' entry")
    zipped = tmp_path / "zip.npz"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("readme.txt", "hello")
    _expect_error(zipped, "unexpected member 'readme.txt'")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: a.pop("trace_weights"), r"missing array\(s\) \['trace_weights'\]"),
        (lambda a: a.pop("params_b_q"), r"missing array\(s\) \['params_b_q'\]"),
        (lambda a: a.update(extra=np.zeros(2)), r"unexpected array\(s\) \['extra'\]"),
        (lambda a: a.update(trace_weights=a["trace_weights"][:, :-1]), "'trace_weights' has shape"),
        (lambda a: a.update(trace_q=a["trace_q"][:3]), "trace sizes are inconsistent"),
        (lambda a: a.update(trace_x=a["trace_x"][0]), "wrong number of dimensions"),
        (
            lambda a: a.update(trace_mask=a["trace_mask"].astype(np.int8)),
            "'trace_mask' must be bool",
        ),
        (
            lambda a: a.update(trace_mask=np.zeros_like(a["trace_mask"])),
            "row that allows no key",
        ),
        (
            lambda a: a.update(trace_scores=a["trace_scores"].astype(np.int64)),
            "'trace_scores' has dtype int64",
        ),
        (
            lambda a: a.update(trace_output=a["trace_output"].astype(np.float32)),
            "mix dtypes",
        ),
        (
            lambda a: a["trace_weights"].__setitem__((0, 0, 0), np.nan),
            "'trace_weights' contains NaN",
        ),
        (lambda a: a["x"].__setitem__((0, 0), np.inf), "'x' contains NaN"),
        (lambda a: a.update(x=a["x"][:, :5]), "'x' has shape"),
        (lambda a: a.update(params_w_q=a["params_w_q"][:, :5]), "'params_w_q' has shape"),
        (lambda a: a.update(meta=a["meta"][:-5]), "not valid UTF-8 JSON"),
        (lambda a: a.update(meta=np.array("{}")), "member 'meta' has dtype <U2"),
        (lambda a: a.update(meta=a["meta"].astype(np.int16)), "'meta' must be a 1-D uint8"),
    ],
)
def test_hand_edited_arrays(saved, tmp_path, edit, match):
    arrays = {k: v.copy() for k, v in _raw(saved).items()}
    edit(arrays)
    _expect_error(_write(tmp_path / "edited.npz", arrays), match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(version=99), "format version 99"),
        (lambda m: m.update(version="1"), "version '1'"),
        (lambda m: m.update(format="something.else"), "format 'something.else'"),
        (lambda m: m.pop("format"), "format None"),
        (lambda m: m.update(settings=[1, 2]), "'meta.settings' must be a JSON object"),
        (lambda m: m.update(tokens=m["tokens"][:-1]), "10 tokens but the arrays have seq_len=11"),
        (lambda m: m.update(tokens=[1] * 11), "'meta.tokens' must be a list of strings"),
        (lambda m: m.update(temperature=-1), "'meta.temperature' must be"),
        (lambda m: m.update(temperature="hot"), "'meta.temperature' must be"),
        (lambda m: m.update(has_params=False), r"unexpected array\(s\)"),
        (lambda m: m.update(has_bias="yes"), "'meta.has_bias' must be true or false"),
    ],
)
def test_hand_edited_metadata(saved, tmp_path, edit, match):
    arrays = _raw(saved)
    meta = _meta(arrays)
    edit(meta)
    _expect_error(_write(tmp_path / "meta.npz", _with_meta(arrays, meta)), match)


def test_meta_that_is_not_an_object(saved, tmp_path):
    arrays = _raw(saved)
    arrays["meta"] = np.frombuffer(b"[1, 2, 3]", dtype=np.uint8)
    _expect_error(_write(tmp_path / "list.npz", arrays), "'meta' must be a JSON object")


class _Payload:
    """Unpickling this creates a file: proof that something was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("key", ["trace_weights", "meta", "x"])
def test_object_array_is_refused_without_unpickling(saved, tmp_path, key):
    marker = tmp_path / "pwned"
    arrays = _raw(saved)
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    arrays[key] = payload
    bad = tmp_path / "evil.npz"
    np.savez(bad, allow_pickle=True, **arrays)
    message = _expect_error(bad, "refused without reading it")
    assert key in message and "object" in message
    assert not marker.exists()
    # the payload is live: unpickling it (what load_state must never do) runs it
    with np.load(bad, allow_pickle=True) as npz:
        npz[key]
    assert marker.exists()


def test_huge_claimed_shape_is_refused_before_allocating(saved, tmp_path):
    arrays = _raw(saved)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    bad = tmp_path / "huge.npz"
    np.savez(bad, **arrays)
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("bomb.npy", b"\x93NUMPY\x01\x00" + buf.getvalue()[8:] + b"\x00" * 16)
    _expect_error(bad, "claims shape")


@settings(max_examples=80, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(data=st.data())
def test_fuzzed_bytes_load_correctly_or_raise_value_error(saved, tmp_path, case, data):
    """Flipped bytes and truncation: either the exact saved state, or a ValueError; never
    another exception, never a wrong state."""
    if data.draw(st.booleans(), label="uncompressed"):  # flips then land in array data too
        np.savez(tmp_path / "plain.npz", **_raw(saved))
        original = (tmp_path / "plain.npz").read_bytes()
    else:
        original = saved.read_bytes()
    n_flips = data.draw(st.integers(0, 4))
    raw = bytearray(original)
    for _ in range(n_flips):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))))
    bad = tmp_path / "fuzz.npz"
    bad.write_bytes(bytes(raw[:cut]))
    try:
        state = load_state(bad)
    except ValueError as err:
        assert str(bad) in str(err)
        return
    _, _, _, trace = case
    for name in TRACE_ARRAYS:
        assert np.array_equal(getattr(state.trace, name), getattr(trace, name))
    assert state.settings == SETTINGS


def test_variants_round_trip_and_a_changed_variant_is_named(tmp_path):
    """RoPE, ALiBi, soft-capping, sinks and top-k: stored, reloaded, and checked by name."""
    rng = np.random.default_rng(3)
    x, params = rng.normal(size=(7, 16)), init_params(16, 4, n_kv_heads=2, seed=1)
    options = dict(n_heads=4, n_kv_heads=2, rope=10000.0, alibi=True, softcap=5.0,
                   sinks=rng.normal(size=4), top_k=3, mask="causal")
    trace = multi_head_attention(x, params, **options)
    path = save_state(tmp_path / "v.npz", SETTINGS, trace, [f"t{i}" for i in range(7)],
                      params=params, x=x)
    state = load_state(path)
    for name in ("sinks", "sink_weights", "kept"):
        np.testing.assert_array_equal(getattr(state.trace, name), getattr(trace, name))
    assert (state.trace.rope, state.trace.alibi, state.trace.softcap, state.trace.top_k) == (
        10000.0, True, 5.0, 3)
    verify_trace(state, multi_head_attention(x, params, **options))
    with pytest.raises(ValueError, match="recomputed top_k=2 differs from the saved 3"):
        verify_trace(state, multi_head_attention(x, params, **{**options, "top_k": 2}))
    with pytest.raises(ValueError, match="recomputed sinks is None"):
        verify_trace(state, multi_head_attention(x, params, **{**options, "sinks": None}))
