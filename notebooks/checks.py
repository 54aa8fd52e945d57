"""Feedback for lesson.ipynb and custom_arrays.ipynb: right or not, without giving the answer.

This module stores no answer.  Each check works the truth out with the attention engine when it
runs (an experiment on the same inputs as the question) and compares your answer with it.  It
prints one line per part: ``correct``, ``not answered yet``, or ``not yet`` with a hint about
where the reasoning may have slipped.  Once every part of a question is correct it also prints
the evidence: what the engine computed.

Use: ``check("hand", hand)`` in the lesson; ``check_piece("split_heads", split_heads)`` and
``check_attention(attention)`` in the homework; ``summary()`` at the end.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from attention_widget import (
    AttentionParams,
    designed_embed,
    designed_params,
    embed,
    head_roles,
    init_latent_params,
    init_params,
    kv_cache_per_token,
    latent_attention,
    multi_head_attention,
    tokenize,
)
from attention_widget.engine import attend, sliding_window_mask, softmax, split_heads

NOT_ANSWERED = "not answered yet"
CORRECT = "correct"

# ---- the inputs the lesson's questions are about (the lesson's text states the same) ---------
HAND_X = np.array([[2.0, 0, 0, 0], [0, 2, 0, 0], [1, 1, 1, 1]])  # 3 tokens, d_model = 4
HAND_PARAMS = AttentionParams(np.eye(4), np.eye(4), np.eye(4), np.eye(4))  # Q = K = V = X
ORDER_TEXT = "The cat chased the dog across the garden."
SWAPPED_TEXT = "The dog chased the cat across the garden."
DUPLICATE_TEXT = "the cat saw the dog and the cat ran ."
SQRT_D_HEAD = 64  # the head width of the sqrt question
LLAMA_LIKE = {"layers": 32, "heads": 32, "kv_heads": 8, "d_head": 128, "bytes": 2}
LATENT_LIKE = {"heads": 32, "d_head": 128, "kv_rank": 512, "rope_dim": 64}
COST = {"short": 12, "long": 4096, "window": 512, "heads": 32, "bytes": 4}
PREVIOUS_TEXTS = (
    ORDER_TEXT,
    DUPLICATE_TEXT,
    "one two three four five six seven eight nine ten " * 6,  # 60 tokens, every word 6 times
)


class Part(NamedTuple):
    """One part of a question: its name, whether it is right, and what to print."""

    name: str
    status: str  # CORRECT, NOT_ANSWERED, or "not yet"
    message: str


_RESULTS: dict[str, bool] = {}


# ---------------------------------------------------------------------------------------------
# comparing an answer with the truth
# ---------------------------------------------------------------------------------------------
def _blank(value: Any) -> bool:
    return value is None or value is Ellipsis


def _number(value: Any) -> float | None:
    """A number from an int, float, Fraction or a string such as "1/9"; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "").replace("_", "")))
        except (ValueError, ZeroDivisionError):
            return None
    if isinstance(value, (int, float, Fraction, np.integer, np.floating)):
        return float(value)
    return None


def _numeric(name: str, given: Any, truth: float, rel: float, hints: Callable[[float], str]) -> Part:
    """Compare a number; ``hints(ratio)`` explains a wrong one by its ratio to the truth."""
    if _blank(given):
        return Part(name, NOT_ANSWERED, "")
    value = _number(given)
    if value is None:
        return Part(name, "not yet", f"write a number (got {given!r})")
    if abs(value - truth) <= rel * abs(truth):
        return Part(name, CORRECT, "")
    ratio = value / truth if truth else math.inf
    return Part(name, "not yet", hints(ratio) or "not this number; check your reasoning")


def _near(ratio: float, target: float, tol: float = 0.02) -> bool:
    return abs(ratio - target) <= tol * target


def _choice(name: str, given: Any, truth: str, options: tuple[str, ...], hint: str) -> Part:
    if _blank(given):
        return Part(name, NOT_ANSWERED, "")
    text = str(given).strip().lower() if isinstance(given, str) else None
    if text not in options:
        return Part(name, "not yet", f"answer with one of {', '.join(map(repr, options))}")
    return Part(name, CORRECT, "") if text == truth else Part(name, "not yet", hint)


def _yes_no(name: str, given: Any, truth: bool, hint: str) -> Part:
    if _blank(given):
        return Part(name, NOT_ANSWERED, "")
    if not isinstance(given, (bool, np.bool_)):
        return Part(name, "not yet", f"answer True or False (got {given!r})")
    return Part(name, CORRECT, "") if bool(given) == truth else Part(name, "not yet", hint)


def _vector(given: Any, size: int) -> tuple[np.ndarray | None, str]:
    try:
        arr = np.asarray(given, dtype=float)
    except (TypeError, ValueError):
        return None, f"write {size} numbers in a list (got {given!r})"
    if arr.shape != (size,):
        return None, f"write {size} numbers in a list (got shape {arr.shape})"
    return arr, ""


# ---------------------------------------------------------------------------------------------
# the lesson's questions: each returns its parts and the evidence shown once all are correct
# ---------------------------------------------------------------------------------------------
def _hand(answer: dict) -> tuple[list[Part], str]:
    truth = multi_head_attention(HAND_X, HAND_PARAMS, n_heads=1)
    weights, output = truth.weights[0, 2], truth.output[2]
    parts = []
    given = answer.get("weights")
    if _blank(given):
        parts.append(Part("weights", NOT_ANSWERED, ""))
    else:
        w, problem = _vector(given, 3)
        unscaled = softmax(truth.scores[0, 2] * math.sqrt(truth.d_head))
        if w is None:
            parts.append(Part("weights", "not yet", problem))
        elif np.allclose(w, weights, atol=0.01):
            parts.append(Part("weights", CORRECT, ""))
        elif abs(w.sum() - 1) > 0.02:
            parts.append(Part("weights", "not yet",
                              f"the weights of one query sum to 1; yours sum to {w.sum():.3f}"))
        elif np.allclose(w, unscaled, atol=0.01):
            parts.append(Part("weights", "not yet", "these are the weights of the scores before "
                                                    "the division by sqrt(d_head)"))
        elif np.allclose(w, truth.weights[0, 0], atol=0.01):
            parts.append(Part("weights", "not yet", "these are query 0's weights (the worked "
                                                    "example); the question asks for query 2"))
        else:
            parts.append(Part("weights", "not yet", "recompute the three scores q_2 . k_j first, "
                                                    "then divide, then exponentiate and normalise"))
    given = answer.get("output")
    if _blank(given):
        parts.append(Part("output", NOT_ANSWERED, ""))
    else:
        o, problem = _vector(given, 4)
        if o is None:
            parts.append(Part("output", "not yet", problem))
        elif np.allclose(o, output, atol=0.01):
            parts.append(Part("output", CORRECT, ""))
        else:
            w = answer.get("weights")
            w = None if _blank(w) else _vector(w, 3)[0]
            if w is not None and np.allclose(o, w @ HAND_X, atol=0.01):
                hint = "your output follows from your weights: correct the weights first"
            else:
                hint = "the output row is sum_j w_2j v_j, with v_j the rows of V = X W_V"
            parts.append(Part("output", "not yet", hint))
    evidence = (f"the engine: query 2's weights {np.round(weights, 3)}, "
                f"output {np.round(output, 3)}")
    return parts, evidence


def _entropy_trend(scale_one: bool) -> tuple[str, list[float]]:
    """Mean row entropy of 16 keys for random unit-variance q, k at d_head 4 .. 256."""
    rng = np.random.default_rng(1)
    means = []
    for d in (4, 16, 64, 256):
        q = rng.standard_normal((1, 256, d))
        k = rng.standard_normal((1, 16, d))
        means.append(float(attend(q, k, k, scale=1.0 if scale_one else None).entropy.mean()))
    change = (means[-1] - means[0]) / means[0]
    trend = "stays" if abs(change) < 0.15 else ("falls" if change < 0 else "rises")
    return trend, means


def _sqrt(answer: dict) -> tuple[list[Part], str]:
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, 100_000, SQRT_D_HEAD))
    std = float((q * k).sum(axis=1).std())  # measured, not from the formula
    scaled, scaled_means = _entropy_trend(scale_one=False)
    unscaled, unscaled_means = _entropy_trend(scale_one=True)

    def std_hint(r: float) -> str:
        if _near(r, std, 0.1):
            return "that is the variance; the question asks for the standard deviation"
        if _near(r, 1 / std, 0.1):
            return "that is the spread after the division; the question is about q . k itself"
        return "a sum of d_head independent products, each of variance 1: what is its variance?"

    def t_hint(r: float) -> str:
        if r > 1:
            return ("without the division the scores are larger, so the softmax is sharper: "
                    "is that a temperature above or below 1?")
        return "scores / T with the scaling should equal the unscaled scores: solve for T"

    trend_hint = "run the experiment in your head: how spread are the scores at d_head 256?"
    parts = [
        _numeric("std_unscaled", answer.get("std_unscaled"), std, 0.05, std_hint),
        _numeric("temperature", answer.get("temperature"), 1 / math.sqrt(SQRT_D_HEAD), 0.02,
                 t_hint),
        _choice("entropy_scaled", answer.get("entropy_scaled"), scaled,
                ("rises", "falls", "stays"), trend_hint),
        _choice("entropy_unscaled", answer.get("entropy_unscaled"), unscaled,
                ("rises", "falls", "stays"), trend_hint),
    ]
    evidence = (f"the engine (16 keys, random unit-variance q and k), mean row entropy at "
                f"d_head 4, 16, 64, 256: with the division {np.round(scaled_means, 2)}, "
                f"without {np.round(unscaled_means, 2)} (uniform would be {math.log(16):.2f}); "
                f"std of q . k at d_head {SQRT_D_HEAD}: {std:.2f}.\n  In the widget: set the "
                "temperature to 1/sqrt(d_head) for its d_head (d_model / n_heads) to see what a "
                "layer without the division would draw.")
    return parts, evidence


def _layer(text: str, *, positional: bool, mask: str | None = None) -> np.ndarray:
    tokens = tokenize(text)
    x = embed(tokens, 64, seed=0, positional=positional)
    return multi_head_attention(x, init_params(64, 4, seed=0), n_heads=4, mask=mask).output


def _order(answer: dict) -> tuple[list[Part], str]:
    tokens, swapped = tokenize(ORDER_TEXT), tokenize(SWAPPED_TEXT)
    a, b = (i for i, (s, t) in enumerate(zip(tokens, swapped, strict=True)) if s != t)
    perm = np.arange(len(tokens))
    perm[[a, b]] = perm[[b, a]]
    out, out_sw = _layer(ORDER_TEXT, positional=False), _layer(SWAPPED_TEXT, positional=False)
    same_rows = np.isclose(out, out_sw).all(axis=1)
    if same_rows.all():
        swap = "c"
    elif np.allclose(out_sw[perm], out):
        swap = "b"
    elif same_rows.sum() == len(tokens) - 2:
        swap = "d"
    else:
        swap = "a"
    others = [i for i in range(len(tokens)) if i not in (a, b)]
    pe_on = _layer(ORDER_TEXT, positional=True), _layer(SWAPPED_TEXT, positional=True)
    moved = float(np.abs(pe_on[0][others] - pe_on[1][others]).max())
    first, second = [i for i, t in enumerate(tokens) if t == "the"][:2]
    twins = np.allclose(out[first], out[second])
    causal = _layer(ORDER_TEXT, positional=False, mask="causal")
    twins_causal = np.allclose(causal[first], causal[second])
    hint = ("list what the layer receives: a set of rows x_i and, with a mask, which keys each "
            "row may see; which of these changed?")
    parts = [
        _choice("swap", answer.get("swap"), swap, ("a", "b", "c", "d"), hint),
        _choice("pe_on_other_rows", answer.get("pe_on_other_rows"),
                "same" if moved < 1e-9 else "changed", ("same", "changed"), hint),
        _choice("the_rows", answer.get("the_rows"), "equal" if twins else "different",
                ("equal", "different"), hint),
        _choice("the_rows_causal", answer.get("the_rows_causal"),
                "equal" if twins_causal else "different", ("equal", "different"), hint),
    ]
    diff = float(np.abs(out_sw[perm] - out).max())
    evidence = (f"the engine, positional encodings off: after swapping rows back, the largest "
                f"difference between the two outputs is {diff:.1e}; with them on, the rows of "
                f"the other words move by up to {moved:.2f}.\n  In the widget: untick the "
                "positional encodings, note the output panel, then type sentence B.")
    return parts, evidence


def _wq0(answer: dict) -> tuple[list[Part], str]:
    tokens = tokenize(ORDER_TEXT)
    x = embed(tokens, 64, seed=0)
    p = init_params(64, 4, seed=0)
    zero_q = AttentionParams(np.zeros_like(p.w_q), p.w_k, p.w_v, p.w_o)
    full = multi_head_attention(x, zero_q, n_heads=4)
    causal = multi_head_attention(x, zero_q, n_heads=4, mask="causal")
    hot = multi_head_attention(x, zero_q, n_heads=4, temperature=0.1)
    rows_equal = np.allclose(full.output, full.output[0])
    own_value = np.allclose(full.head_outputs, full.v)
    output = "b" if rows_equal else ("a" if own_value else "c")

    def count_hint(r: float) -> str:
        return ("every score is 0, so every visible key gets the same weight; count the keys "
                "the query sees (itself included; positions count from 0)")

    parts = [
        _numeric("weight", answer.get("weight"), float(full.weights[0, 0, 3]), 0.01, count_hint),
        _numeric("weight_causal", answer.get("weight_causal"), float(causal.weights[0, 3, 0]),
                 0.01, count_hint),
        _choice("output_rows", answer.get("output_rows"), output, ("a", "b", "c"),
                "each head output row is sum_j w_ij v_j: put your weights in"),
        _yes_no("temperature_matters", answer.get("temperature_matters"),
                not np.allclose(hot.weights, full.weights),
                "what is 0 / T?"),
    ]
    evidence = (f"the engine, W_Q = 0 on {len(tokens)} tokens: every weight without a mask is "
                f"{full.weights[0, 0, 0]:.4f}; mean row entropy {full.head_entropy[0]:.3f} = "
                f"log({len(tokens)}); all output rows equal: {rows_equal}.\n  In the tour, "
                "section 12: a designed head too narrow for its job has W_Q = 0 (try d_model 32 "
                "with 8 heads).")
    return parts, evidence


def _cache(answer: dict) -> tuple[list[Part], str]:
    tokens = tokenize(ORDER_TEXT)
    longer = [*tokens, "!"]
    p = init_params(64, 4, seed=0)

    def earlier_rows(mask: str | None) -> str:
        before = multi_head_attention(embed(tokens, 64), p, n_heads=4, mask=mask).output
        after = multi_head_attention(embed(longer, 64), p, n_heads=4, mask=mask).output
        same = np.isclose(before, after[: len(tokens)]).all(axis=1)
        return "a" if same.all() else ("b" if not same.any() else "c")

    cfg, mla = LLAMA_LIKE, LATENT_LIKE
    one_token = np.empty((cfg["layers"], 2, cfg["kv_heads"], 1, cfg["d_head"]), np.float16)
    mha_token = np.empty((cfg["layers"], 2, cfg["heads"], 1, cfg["d_head"]), np.float16)
    latent_numbers = mla["kv_rank"] + mla["rope_dim"]  # one c_kv row and one shared rope key
    mha_numbers = 2 * mla["heads"] * mla["d_head"]

    def bytes_hint(r: float) -> str:
        if _near(r, 2) or _near(r, 0.5):
            return "a factor 2 off: both K and V? 2 bytes per number?"
        if _near(r, cfg["heads"] / cfg["kv_heads"]) or _near(r, cfg["kv_heads"] / cfg["heads"]):
            return "which heads have their own keys and values: the query heads or the kv heads?"
        if _near(r, 1 / cfg["layers"]):
            return "the cache holds every layer's keys and values"
        if _near(r, 8) or _near(r, 1 / 8):
            return "bits or bytes?"
        return "numbers per token = layers x (K and V) x kv heads x d_head; then bytes"

    def fraction_hint(r: float) -> str:
        if r > 1:
            return "a fraction of the MHA cache: it should be below 1"
        return "per token and layer, MHA keeps K and V for every head; MLA keeps one c_kv row " \
               "and one shared rope key"

    parts = [
        _choice("append_causal", answer.get("append_causal"), earlier_rows("causal"),
                ("a", "b", "c"), "which keys can an earlier query see? did any of them change?"),
        _choice("append_no_mask", answer.get("append_no_mask"), earlier_rows(None),
                ("a", "b", "c"), "which keys can an earlier query see? did any of them change?"),
        _numeric("bytes_gqa", answer.get("bytes_gqa"), one_token.nbytes, 0.001, bytes_hint),
        _numeric("bytes_mha", answer.get("bytes_mha"), mha_token.nbytes, 0.001, bytes_hint),
        _numeric("latent_fraction", answer.get("latent_fraction"), latent_numbers / mha_numbers,
                 0.02, fraction_hint),
    ]
    gib = one_token.nbytes * 8192 / 2**30
    evidence = (f"at 8,192 tokens the GQA cache holds {gib:.1f} GiB, MHA "
                f"{mha_token.nbytes * 8192 / 2**30:.1f} GiB, per sequence")
    return parts, evidence


def _why(answer: dict) -> tuple[list[Part], str]:
    """Why GQA and MLA exist: what sharing keeps, and what a narrow latent costs."""
    tokens = tokenize(ORDER_TEXT)
    x = embed(tokens, 64)
    mqa = multi_head_attention(x, init_params(64, 8, 1, seed=0), n_heads=8, n_kv_heads=1)
    favourite = mqa.weights.argmax(axis=-1)  # [heads, n]: the key each query likes best
    heads_differ = bool((favourite != favourite[0]).any())
    gqa2 = kv_cache_per_token(8, 8, 2)
    break_even = max(r for r in range(1, 65) if kv_cache_per_token(8, 8, kv_rank=r) <= gqa2)
    latent = latent_attention(x, init_latent_params(64, 8, 4, seed=0), n_heads=8, rope=None)
    keys = latent.k.transpose(1, 0, 2).reshape(len(tokens), -1)  # [n, heads * d_head]
    rank = int(np.linalg.matrix_rank(keys))

    def even_hint(r: float) -> str:
        if r > 64:
            return "a latent compresses X: kv_rank is at most d_model"
        return ("read the readout for GQA with 2 kv heads, then ask how many numbers latent "
                "attention caches per token")

    def rank_hint(r: float) -> str:
        return ("every head's keys are c_kv W_UK: how many columns does c_kv have, and can a "
                "product have more independent directions than its narrowest factor?")

    parts = [
        _yes_no("mqa_heads_differ", answer.get("mqa_heads_differ"), heads_differ,
                "the heads share K and V, but what do their queries come from?"),
        _numeric("latent_break_even", answer.get("latent_break_even"), break_even, 0.001,
                 even_hint),
        _numeric("key_rank", answer.get("key_rank"), rank, 0.001, rank_hint),
    ]
    distinct = len({tuple(f) for f in favourite})
    evidence = (f"with one kv head the 8 heads still pick {distinct} different patterns of "
                f"favourite keys (their queries differ); latent attention with kv_rank 4 gives "
                f"keys of rank {rank} across all heads: a smaller cache, fewer directions for "
                "the heads to tell tokens apart.")
    return parts, evidence


def _cost(answer: dict) -> tuple[list[Part], str]:
    short = multi_head_attention(embed([str(i) for i in range(COST["short"])], 8),
                                 init_params(8, 1), n_heads=1)
    per_head_short = short.scores[0].size  # counted in a real trace
    n, window = COST["long"], COST["window"]
    per_head_long = n * n  # the same count at 4,096 tokens (a trace that size is too slow for a check)
    windowed = int(sliding_window_mask(n, window).sum())
    gib = COST["heads"] * per_head_long * COST["bytes"] / 2**30

    def count_hint(r: float) -> str:
        if _near(r, 0.5, 0.1):
            return "about half: that would be a causal mask; the question has no mask"
        return "one score per (query, key) pair"

    def window_hint(r: float) -> str:
        if r > 1:
            return "the first queries see fewer than 512 keys"
        return "query i sees min(i + 1, 512) keys: add them up"

    parts = [
        _numeric("scores_short", answer.get("scores_short"), per_head_short, 0.0, count_hint),
        _numeric("scores_long", answer.get("scores_long"), per_head_long, 0.0, count_hint),
        _numeric("scores_window", answer.get("scores_window"), windowed, 0.0, window_hint),
        _numeric("gib_long", answer.get("gib_long"), gib, 0.02,
                 lambda r: "heads x scores per head x bytes, then divide by 2**30"),
    ]
    evidence = (f"at 4,096 tokens one head's weights are {per_head_long:,} numbers; a window "
                f"of 512 keeps {windowed / per_head_long:.0%} of them")
    return parts, evidence


def _duplicate_rows(mask: str | None) -> int:
    tokens = tokenize(DUPLICATE_TEXT)
    trace = multi_head_attention(designed_embed(tokens, 64), designed_params(64, 4),
                                 n_heads=4, mask=mask)
    twin = np.array([[s == t and i != j for j, t in enumerate(tokens)]
                     for i, s in enumerate(tokens)])
    share = (trace.weights[1] * twin).sum(axis=1)  # head 1: duplicate token
    return int((share >= 0.5).sum())


def _duplicate(answer: dict) -> tuple[list[Part], str]:
    def hint(r: float) -> str:
        return ("a row counts when its word occurs again somewhere the query may look; "
                "count occurrences, not words")

    parts = [
        _numeric("rows", answer.get("rows"), _duplicate_rows(None), 0.0, hint),
        _numeric("rows_causal", answer.get("rows_causal"), _duplicate_rows("causal"), 0.0, hint),
    ]
    return parts, ("In a widget: AttentionWidget.from_arrays(designed_embed(tokens, 64), "
                   "designed_params(64, 4), tokens, n_heads=4), head 1, with and without the "
                   "causal mask")


def _previous(answer: dict) -> tuple[list[Part], str]:
    w_q, w_k = answer.get("w_q"), answer.get("w_k")
    if _blank(w_q) or _blank(w_k):
        return [Part("head", NOT_ANSWERED, "")], ""
    w_q, w_k = np.asarray(w_q, dtype=float), np.asarray(w_k, dtype=float)
    if w_q.ndim != 2 or w_q.shape[0] != 64 or w_q.shape != w_k.shape:
        return [Part("head", "not yet", f"W_Q and W_K must both be (64, d_head) arrays, got "
                                        f"{w_q.shape} and {w_k.shape}")], ""
    eye = np.eye(64)[:, : w_q.shape[1]]
    labels = []
    for text in PREVIOUS_TEXTS:
        tokens = tokenize(text)
        params = AttentionParams(w_q, w_k, eye, eye.T)
        trace = multi_head_attention(designed_embed(tokens, 64), params, n_heads=1)
        role = head_roles(trace.weights, tokens)[0]
        labels.append((len(tokens), role))
    bad = [(n, r) for n, r in labels if r.role != "previous token" or r.share < 0.9]
    if not bad:
        shares = ", ".join(f"{r.share:.2f}" for _, r in labels)
        return [Part("head", CORRECT, "")], f"head_roles: previous token on every text ({shares})"
    n, role = bad[0]
    if role.role == "previous token":
        hint = (f"on a text of {n} tokens head_roles says {role.label!r}: the right key wins but "
                "not by enough; how do you make a softmax sharper?")
    elif role.role == "broad":
        hint = (f"on a text of {n} tokens head_roles says 'broad' (no role above 0.4): the "
                "scores hardly differ; do your queries and keys read the position columns?")
    else:
        hint = (f"on a text of {n} tokens head_roles says {role.label!r}: compare the position "
                "a query asks for with the position you want it to find")
    return [Part("head", "not yet", hint)], ""


_QUESTIONS: dict[str, Callable[[dict], tuple[list[Part], str]]] = {
    "hand": _hand,
    "sqrt": _sqrt,
    "order": _order,
    "wq0": _wq0,
    "cache": _cache,
    "why": _why,
    "cost": _cost,
    "duplicate": _duplicate,
    "previous": _previous,
}


def _entry(table: dict[str, Callable], name: str, kind: str) -> Callable:
    if name not in table:
        raise ValueError(f"no {kind} {name!r}; the {kind}s are {list(table)}")
    return table[name]


def check(question: str, answer: Any) -> None:
    """Print feedback on ``answer`` (a dict of parts) to ``question`` (see ``all_correct``)."""
    ask = _entry(_QUESTIONS, question, "question")
    if not isinstance(answer, dict):
        print(f"{question}: write your answer as a dict, as in the answer cell (got {answer!r})")
        _RESULTS[question] = False
        return
    parts, evidence = ask(answer)
    _report(question, parts, evidence)


def _report(question: str, parts: list[Part], evidence: str) -> None:
    for part in parts:
        line = f"{question if part.name == question else f'{question}.{part.name}'}: {part.status}"
        print(line + (f" ({part.message})" if part.message else ""))
    ok = all(p.status == CORRECT for p in parts)
    if ok and evidence:
        for paragraph in evidence.split("\n"):
            print(textwrap.fill(paragraph.strip(), 88, initial_indent="  ",
                                subsequent_indent="    "))
    _RESULTS[question] = ok


def summary() -> None:
    """How many questions have been checked, and how many are fully correct."""
    done = sum(_RESULTS.values())
    print(f"{done} of {len(_RESULTS)} checked questions fully correct"
          + ("" if _RESULTS else " (run the check cells first)"))


def all_correct(questions: tuple[str, ...] | None = None) -> bool:
    """True when every lesson question (or those given) was checked and found correct."""
    wanted = tuple(_QUESTIONS) if questions is None else questions
    return all(_RESULTS.get(q, False) for q in wanted)


# ---------------------------------------------------------------------------------------------
# the homework: pieces of an attention implementation, tested against the engine
# ---------------------------------------------------------------------------------------------
STAGES = ("q", "k", "v", "scores", "weights", "head_outputs", "concat", "output")


def compare(mine: dict, ref: Any, atol: float = 1e-9) -> str | None:
    """Print each stage's largest difference from ``ref`` (a trace); return the first that differs."""
    first_bad = None
    for name in STAGES:
        a, b = np.asarray(mine[name]), getattr(ref, name)
        if a.shape != b.shape:
            print(f"{name:>13s}: shape {a.shape}, the reference has {b.shape}")
            first_bad = first_bad or name
            continue
        diff = float(np.max(np.abs(a - b)))
        ok = diff <= atol
        print(f"{name:>13s}: max |mine - ref| = {diff:.2e}  {'ok' if ok else 'DIFFERENT'}")
        if not ok and first_bad is None:
            first_bad = name
    return first_bad


def _piece_inputs(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, h, d = 5, 3, 4
    return {"m": rng.standard_normal((n, h * d)), "q": rng.standard_normal((h, n, d)),
            "k": rng.standard_normal((h, n, d)), "s": rng.standard_normal((h, n, n)),
            "mask": np.tri(n, dtype=bool), "h": np.array(h)}


def _call(fn: Callable, *args: Any) -> tuple[Any, str]:
    try:
        return fn(*args), ""
    except NotImplementedError:
        return None, NOT_ANSWERED  # the TODO stub, still as given
    except Exception as err:  # the student's code: report, do not stop the notebook
        return None, f"it raised {type(err).__name__}: {err}"


def _unanswered_or_error(name: str, error: str) -> Part:
    return Part(name, NOT_ANSWERED, "") if error == NOT_ANSWERED else Part(name, "not yet", error)


def _split_heads_part(fn: Callable) -> list[Part]:
    t = _piece_inputs()
    got, error = _call(fn, t["m"], int(t["h"]))
    if error:
        return [_unanswered_or_error("split_heads", error)]
    want = split_heads(t["m"], int(t["h"]))
    got = np.asarray(got)
    if got.shape != want.shape:
        return [Part("split_heads", "not yet", f"shape {got.shape}, expected {want.shape} "
                                               "(n_heads, seq, d_head)")]
    if np.allclose(got, want):
        return [Part("split_heads", CORRECT, "")]
    return [Part("split_heads", "not yet", "right shape, wrong numbers: head h of row i should "
                                           "hold columns h*d_head .. (h+1)*d_head - 1 of row i")]


def _scores_part(fn: Callable) -> list[Part]:
    t = _piece_inputs()
    got, error = _call(fn, t["q"], t["k"])
    if error:
        return [_unanswered_or_error("scores", error)]
    want = attend(t["q"], t["k"], t["k"]).scores
    got = np.asarray(got)
    if got.shape != want.shape:
        return [Part("scores", "not yet", f"shape {got.shape}, expected {want.shape}")]
    if np.allclose(got, want):
        return [Part("scores", CORRECT, "")]
    ratio = got / want
    if np.allclose(ratio, ratio.flat[0]):
        return [Part("scores", "not yet", f"every score is {ratio.flat[0]:.3f} times the "
                                          "reference's")]
    return [Part("scores", "not yet", "one score per (query, key) pair: q_i . k_j, scaled")]


def _weights_part(fn: Callable) -> list[Part]:
    t = _piece_inputs()
    parts = []
    for name, mask in (("no_mask", None), ("causal_mask", t["mask"])):
        got, error = _call(fn, t["s"], mask)
        if error:
            parts.append(_unanswered_or_error(name, error))
            continue
        want = softmax(t["s"], mask=mask)
        got = np.asarray(got)
        if got.shape != want.shape:
            parts.append(Part(name, "not yet", f"shape {got.shape}, expected {want.shape}"))
        elif np.allclose(got, want):
            parts.append(Part(name, CORRECT, ""))
        elif not np.allclose(got.sum(axis=-1), 1):
            sums = got.sum(axis=-1)
            hint = f"rows sum to {sums.min():.2f} .. {sums.max():.2f}, not 1"
            if mask is not None and not (got[:, ~mask] > 0).any():
                hint += " (masked keys are 0, but what happened to the weight they had?)"
            parts.append(Part(name, "not yet", hint))
        elif mask is not None and (got[:, ~mask] > 1e-12).any():
            parts.append(Part(name, "not yet", "masked keys still get weight"))
        else:
            parts.append(Part(name, "not yet", "rows sum to 1 but the numbers differ"))
    return parts


_PIECES: dict[str, Callable[[Callable], list[Part]]] = {
    "split_heads": _split_heads_part,
    "scores": _scores_part,
    "weights": _weights_part,
}


def check_piece(piece: str, fn: Callable) -> None:
    """Test one piece of an implementation against the engine on random inputs; print feedback."""
    _report(piece, _entry(_PIECES, piece, "piece")(fn), "")


def check_attention(attention: Callable, x: np.ndarray, params: AttentionParams,
                    n_heads: int) -> None:
    """Run ``attention(x, params, n_heads, mask)`` with no mask and a causal mask; compare stages."""
    ok = True
    for mask in (None, "causal"):
        ref = multi_head_attention(x, params, n_heads=n_heads, mask=mask)
        mine, error = _call(attention, x, params, n_heads, None if mask is None else ref.mask)
        if error == NOT_ANSWERED:
            print(f"attention: {NOT_ANSWERED} (a piece still raises NotImplementedError)")
            _RESULTS["attention"] = False
            return
        print(f"mask={mask}:")
        if error:
            print(f"  {error}")
            ok = False
            continue
        ok = compare(mine, ref) is None and ok
    print(f"attention: {CORRECT} (every stage matches the engine)" if ok
          else "attention: not yet (fix the first stage that differs)")
    _RESULTS["attention"] = ok
