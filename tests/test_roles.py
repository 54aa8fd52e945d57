"""head_roles: hand-made weights for every role and the threshold, and a loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attention_widget import HeadRole, embed, head_roles, init_params, multi_head_attention
from attention_widget.roles import BROAD_BELOW, ROLES, role_shares

N = 6
TOKENS = ["[CLS]", "the", "cat", "sat", ".", "[SEP]"]


def one_hot(targets) -> np.ndarray:
    """One head whose query ``i`` puts all its weight on key ``targets[i]``."""
    w = np.zeros((1, len(targets), len(targets)))
    w[0, np.arange(len(targets)), targets] = 1.0
    return w


def only(role_label: str, weights, special=None) -> HeadRole:
    (r,) = head_roles(weights, TOKENS[: weights.shape[1]], special)
    assert r.label == role_label, r
    return r


# ---- every role, by hand ---------------------------------------------------------------------
def test_previous_token():
    r = only("previous token 1.00", one_hot([0, 0, 1, 2, 3, 4]))  # row 0 can only look at itself
    assert r == HeadRole(0, "previous token", 1.0)


def test_next_token():
    only("next token 1.00", one_hot([1, 2, 3, 4, 5, 5]))


def test_self():
    only("self 1.00", one_hot(range(N)))


def test_first_token():
    # row 0 is left out of "first token" (its key 0 is itself): all of rows 1..5 -> 1.00
    only("first token 1.00", one_hot([0] * N))


def test_special_tokens():
    special = np.array([False, False, False, False, False, True])
    w = one_hot([5] * N)  # everyone looks at [SEP]; [SEP] itself is not counted
    only("special tokens 1.00", w, special)
    only("broad", w)  # without the mask no role reaches 0.4: next 1/5, self 1/6


def test_special_tokens_sum_over_every_special_key():
    special = np.array([True, False, False, False, False, True])
    w = np.zeros((1, N, N))
    w[0, :, 0], w[0, :, 5] = 0.3, 0.3
    w[0, :, 2] = 0.4
    # non-special rows 1..4 put 0.6 on [CLS] + [SEP]; first token alone is 0.3
    assert only("special tokens 0.60", w, special).share == pytest.approx(0.6)


def test_uniform_weights_are_broad():
    r = only("broad", np.full((1, N, N), 1 / N))
    assert r.role == "broad" and r.share == pytest.approx(1 / N)


def prev_heavy(share: float, n: int = 10) -> np.ndarray:
    """Rows i >= 1 put ``share`` on key i - 1 and the rest evenly on the other keys."""
    w = np.full((1, n, n), 1 / n)
    for i in range(1, n):
        w[0, i] = (1 - share) / (n - 1)
        w[0, i, i - 1] = share
    return w


@pytest.mark.parametrize(
    ("share", "label"),
    [(0.9, "previous token 0.90"), (0.4 + 1e-9, "previous token 0.40"), (0.4 - 1e-9, "broad")],
)
def test_the_broad_threshold(share, label):
    (r,) = head_roles(prev_heavy(share), [f"t{i}" for i in range(10)])
    assert r.label == label
    assert r.share == pytest.approx(share)
    assert BROAD_BELOW == 0.4


def test_a_tie_goes_to_the_role_listed_first():
    # with two tokens, row 1's key 0 is both its previous token and the first token
    (r,) = head_roles(one_hot([1, 0]), ["a", "b"])
    assert r.role == "previous token"


def test_one_token_has_only_self():
    assert role_shares(np.ones((2, 1, 1))).keys() == {"self"}
    assert [r.label for r in head_roles(np.ones((2, 1, 1)), ["a"])] == ["self 1.00"] * 2


def test_special_role_needs_some_special_and_some_plain_tokens():
    w = one_hot(range(N))
    assert "special tokens" not in role_shares(w, np.zeros(N, dtype=bool))
    assert "special tokens" not in role_shares(w, np.ones(N, dtype=bool))
    assert "special tokens" in role_shares(w, np.eye(N, dtype=bool)[0])


def test_several_heads_at_once():
    w = np.concatenate([one_hot([0, 0, 1, 2, 3, 4]), one_hot(range(N)), one_hot([0] * N)])
    labels = [r.label for r in head_roles(w, TOKENS)]
    assert labels == ["previous token 1.00", "self 1.00", "first token 1.00"]
    assert [r.head for r in head_roles(w, TOKENS)] == [0, 1, 2]


# ---- the definitions, against a loop -----------------------------------------------------------
def loop_shares(w: np.ndarray, special) -> dict[str, float]:
    """One head, row by row, straight from the definitions in roles.py's docstring."""
    n = w.shape[0]
    rows = {
        "previous token": [(i, [i - 1]) for i in range(1, n)],
        "next token": [(i, [i + 1]) for i in range(n - 1)],
        "self": [(i, [i]) for i in range(n)],
        "first token": [(i, [0]) for i in range(1, n)],
    }
    if special is not None:
        keys = [j for j in range(n) if special[j]]
        plain = [i for i in range(n) if not special[i]]
        if keys and plain:
            rows["special tokens"] = [(i, keys) for i in plain]
    return {
        role: sum(sum(w[i, j] for j in keys) for i, keys in r) / len(r)
        for role, r in rows.items()
        if r
    }


@st.composite
def weight_arrays(draw):
    n_heads, n = draw(st.integers(1, 4)), draw(st.integers(1, 9))
    raw = draw(arrays(np.float64, (n_heads, n, n), elements=st.floats(0, 1)))
    raw = raw + 1e-3  # no all-zero rows
    special = draw(st.none() | arrays(np.bool_, (n,)))
    return raw / raw.sum(axis=2, keepdims=True), special


@settings(max_examples=100, deadline=None)
@given(case=weight_arrays())
def test_shares_and_roles_match_a_loop(case):
    w, special = case
    shares = role_shares(w, special)
    roles = head_roles(w, [f"t{i}" for i in range(w.shape[1])], special)
    for h, r in enumerate(roles):
        ref = loop_shares(w[h], special)
        assert list(shares) == [role for role in ROLES if role in ref]
        for role, value in ref.items():
            assert shares[role][h] == pytest.approx(value)
        best = max(ref.values())
        assert r.share == pytest.approx(best)
        assert (r.role == "broad") == (best < BROAD_BELOW)
        if r.role != "broad":
            assert ref[r.role] == pytest.approx(best)


def test_roles_of_an_engine_trace():
    tokens = ["the", "cat", "sat", "on", "the", "mat"]
    x = embed(tokens, 32)
    trace = multi_head_attention(x, init_params(32, 4), n_heads=4, mask="causal")
    roles = head_roles(trace.weights, tokens)
    assert len(roles) == 4
    for r in roles:
        assert r.role in (*ROLES, "broad")
        assert 0 <= r.share <= 1


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "tokens", "special", "error", "words"),
    [
        (np.eye(3), ["a", "b", "c"], None, ValueError, r"weights\[None\]"),
        (np.ones((1, 2, 3)) / 3, ["a", "b"], None, ValueError, "shape"),
        (np.zeros((1, 0, 0)), [], None, ValueError, "n >= 1"),
        (np.full((1, 2, 2), np.nan), ["a", "b"], None, ValueError, "NaN"),
        (np.array([[[1.5, -0.5], [0, 1]]]), ["a", "b"], None, ValueError, "non-negative"),
        (np.ones((1, 2, 2)), ["a", "b"], None, ValueError, "summing to 1"),
        (np.array([[["x"]]]), ["a"], None, TypeError, "real numbers"),
        (np.eye(2)[None], ["a"], None, ValueError, "tokens has 1"),
        (np.eye(2)[None], "ab", None, TypeError, "tokens"),
        (np.eye(2)[None], ["a", 2], None, TypeError, "tokens"),
        (np.eye(2)[None], ["a", "b"], [1, 0], TypeError, "special"),
        (np.eye(2)[None], ["a", "b"], [True], ValueError, "special"),
    ],
)
def test_bad_input_names_the_argument(weights, tokens, special, error, words):
    with pytest.raises(error, match=words):
        head_roles(weights, tokens, special)


def test_rows_that_a_sink_shares_are_measured_as_they_are():
    """A sink (gpt-oss, DeepSeek V4) takes part of each row: the rest is measured, not refused."""
    w = 0.6 * np.eye(4)[None]  # (1, 4, 4): each query keeps 0.6 for itself, 0.4 went to a sink
    (role,) = head_roles(w, ["a", "b", "c", "d"])
    assert role.role == "self" and role.share == pytest.approx(0.6)
    with pytest.raises(ValueError, match="summing to 1 or less"):
        head_roles(1.2 * np.eye(4)[None], ["a", "b", "c", "d"])
