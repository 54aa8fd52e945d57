"""Your own arrays as the widget's input: :class:`ArraysSource`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import sources
from .cached import CachedAttention
from .engine import AttentionParams, multi_head_attention
from .long import LONG_THRESHOLD
from .sources import Progress, Settings, Source, Traced, divisors, mask_label
from .stages import source_stages
from .variant_source import VARIANT_DEFAULTS, engine_variants

__all__ = ["ArraysSource"]


class ArraysSource(Source):
    """Your own input ``x`` (seq_len, d_model) and weights.

    Parameters
    ----------
    x : array_like, shape (seq_len, d_model)
    params : AttentionParams
    tokens : sequence of str, optional
        Row labels; default ``"0", "1", ...``.
    n_heads, n_kv_heads, temperature, mask, window
        Checked once through :func:`attention_widget.multi_head_attention`, which names a bad
        argument.  ``n_kv_heads`` defaults to what the weights were made for.

    Notes
    -----
    The widget's text, d_model, seed and positional encodings are fixed by the arrays; the
    key/value heads follow from ``n_heads`` and the width of ``params.w_k``.
    """

    kind = "arrays"
    fixed_by = "the arrays given to from_arrays"

    def __init__(self, x: np.ndarray, params: AttentionParams,
                 tokens: Sequence[str] | None = None, *, n_heads: int,
                 n_kv_heads: int | None = None, temperature: float = 1.0, mask: str = "none",
                 window: int = 3) -> None:
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, got {type(params).__name__}")
        if not isinstance(mask, str) or mask not in ("none", "causal", "sliding"):
            got = repr(mask) if isinstance(mask, str) else f"a {type(mask).__name__}"
            raise ValueError(f"mask must be 'none', 'causal' or 'sliding', got {got}; to show a "
                             "mask of your own, compute trace = multi_head_attention(x, params, "
                             "mask=...) and show AttentionWidget.from_attentions(trace.weights, "
                             "tokens)")
        if n_kv_heads is None and isinstance(n_heads, int) and n_heads > 0:
            d_head = params.d_model // n_heads
            if d_head and params.d_kv % d_head == 0:
                n_kv_heads = params.d_kv // d_head  # what the weights were made for
        x = np.asarray(x)
        long = x.ndim == 2 and x.shape[0] > LONG_THRESHOLD  # checked on its first row
        if long and not np.isfinite(x).all():
            raise ValueError("x contains NaN or infinity; every value must be finite")
        multi_head_attention(x[:1] if long else x, params, n_heads=n_heads,
                             n_kv_heads=n_kv_heads, temperature=temperature, mask=mask,
                             window=window)
        self.x = np.array(x, dtype=np.float64)
        self.params = params
        self.tokens = [str(i) for i in range(self.x.shape[0])] if tokens is None else [
            str(t) for t in tokens]
        if len(self.tokens) != self.x.shape[0]:
            raise ValueError(f"tokens has {len(self.tokens)} entries but x has "
                             f"{self.x.shape[0]} rows")
        self.n_kv_heads = n_kv_heads
        self._attention = CachedAttention()

    @property
    def fixed(self) -> dict[str, Any]:
        """Text (the tokens), d_model, seed and positional encodings."""
        return {"text": " ".join(self.tokens), "d_model": self.params.d_model, "seed": 0,
                "positional": True, "weights": "random", "kind": "standard",
                "kv_rank": VARIANT_DEFAULTS["kv_rank"], "rope_dim": 0,
                "source_text": VARIANT_DEFAULTS["source_text"]}

    def check_heads(self, n_heads: int, d_model: int) -> None:
        """Also: the key/value width of the weights must split into whole heads."""
        super().check_heads(n_heads, d_model)
        options = self.head_options(d_model)
        if n_heads not in options:
            raise ValueError(f"n_heads={n_heads} does not fit the given weights (w_k has "
                             f"{self.params.d_kv} columns): choose one of {options}")

    def head_options(self, d_model: int) -> list[int]:
        """Head counts whose head size divides the key/value width, in whole groups."""
        p = self.params
        return [h for h in divisors(p.d_model)
                if p.d_kv % (p.d_model // h) == 0 and h % (p.d_kv // (p.d_model // h)) == 0]

    def kv_heads(self, s: Settings) -> int:
        """The key/value heads the weights hold at ``s.n_heads``."""
        return self.params.d_kv // (self.params.d_model // s.n_heads)

    def kv_options(self, s: Settings) -> list[int]:
        """Only the one the weights hold."""
        return [self.kv_heads(s)]

    def is_long(self, s: Settings) -> bool:
        """More than ``LONG_THRESHOLD`` rows."""
        return len(self.tokens) > LONG_THRESHOLD

    def trace(self, s: Settings, progress: Progress | None = None,
              cancel: object = None) -> Traced:
        """The trace of the given arrays at ``s``'s heads, temperature and mask."""
        window = s.window_for(len(self.tokens))
        trace = self._attention(self.x, self.params, n_heads=s.n_heads,
                                n_kv_heads=self.kv_heads(s), temperature=s.temperature,
                                mask=s.mask, window=window, progress=progress, cancel=cancel,
                                variants=engine_variants(s), long_dtype=sources.LONG_DTYPE)
        return Traced(list(self.tokens), trace, self.params, mask_label(s.mask, window),
                      stages=source_stages("arrays"))

    @classmethod
    def restore(cls, state: Any) -> ArraysSource:
        """From the state's x, params and tokens (KeyError if it holds no params)."""
        if state.params is None:
            raise KeyError("params")
        s = state.settings
        return cls(state.x, state.params, state.tokens, n_heads=s["n_heads"],
                   temperature=s["temperature"], mask=s["mask"], window=s["window"])
