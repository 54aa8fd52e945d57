"""The engine's attention, reusing the previous result where only the temperature changed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .engine import AttentionParams, AttentionTrace, multi_head_attention, with_temperature
from .long import LONG_THRESHOLD, LongTrace, long_attention, long_with_temperature

__all__ = ["CachedAttention"]

Progress = Callable[[float, str], None]  # report(fraction, message)


class CachedAttention:
    """:func:`multi_head_attention`, reusing the previous result where it can.

    When only the temperature changed (the same x and params objects, heads, mask and
    window), :func:`with_temperature` keeps the projections and the scores.  Above
    ``LONG_THRESHOLD`` tokens the same, block by block (:mod:`attention_widget.long`).
    """

    def __init__(self) -> None:
        self._last: tuple | None = None  # (x, params, heads/mask/window, trace)

    def __call__(self, x: np.ndarray, params: AttentionParams, *, n_heads: int,
                 n_kv_heads: int | None, temperature: float, mask: str, window: int | None,
                 progress: Progress | None = None, cancel: object = None,
                 variants: dict | None = None, long_dtype: type = np.float32
                 ) -> AttentionTrace | LongTrace:
        """The trace, as :func:`multi_head_attention` computes it.

        ``variants`` are its variant keyword arguments (rope, alibi, ...); ``long_dtype`` is
        the precision above ``LONG_THRESHOLD`` tokens.
        """
        variants = variants or {}
        key = (n_heads, n_kv_heads, mask, window,
               tuple((k, np.asarray(v).tobytes()) for k, v in variants.items()))
        last, long = self._last, x.shape[0] > LONG_THRESHOLD
        if long and "top_k" in variants:
            raise ValueError(f"top-k is drawn up to {LONG_THRESHOLD} tokens; shorten the text "
                             "or turn top-k off")
        hooks = {"progress": progress, "cancel": cancel}
        if last is not None and last[0] is x and last[1] is params and last[2] == key:
            trace = (long_with_temperature(last[3], params, temperature, **hooks) if long
                     else with_temperature(last[3], params, temperature))
        elif long:
            trace = long_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                                   temperature=temperature, mask=mask, window=window,
                                   dtype=long_dtype, **variants, **hooks)
        else:
            trace = multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                                         temperature=temperature, mask=mask, window=window,
                                         dtype=np.float64, **variants)
        self._last = (x, params, key, trace)
        return trace
