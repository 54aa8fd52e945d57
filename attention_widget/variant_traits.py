"""The widget's attention-variant settings (a part of :class:`~attention_widget.AttentionWidget`).

Each trait is a field of :class:`~attention_widget.sources.Settings`, so a change computes the
trace anew, is saved in state files and listed in ``settings``.  What they compute is
:mod:`attention_widget.variant_source`'s.
"""

from __future__ import annotations

from typing import Any

import traitlets as T

from .variant_source import KINDS, VARIANT_DEFAULTS, variant_problem

__all__ = ["VARIANT_TRAITS", "VariantTraits"]

VARIANT_TRAITS = tuple(VARIANT_DEFAULTS)


class VariantTraits(T.HasTraits):
    """The variant traits, their checks, and the KV-cache readout."""

    kind = T.Enum(list(KINDS), "standard", help="'standard' (multi-head; grouped-query and "
                  "multi-query through n_kv_heads), 'latent' (DeepSeek's multi-head latent "
                  "attention: K and V rebuilt from a latent c_kv of kv_rank columns) or "
                  "'cross' (queries from text, keys and values from source_text).")
    kv_rank = T.Int(VARIANT_DEFAULTS["kv_rank"], help="Latent attention: columns of c_kv, "
                    "what a cache keeps per token (1 .. d_model).")
    rope_dim = T.Int(0, help="Latent attention: columns of the rotary key shared by all heads "
                     "(even; 0: none).")
    source_text = T.Unicode(VARIANT_DEFAULTS["source_text"], help="Cross-attention: the text "
                            "the keys and values come from.")
    rope = T.Float(0.0, help="RoPE base θ (e.g. 10000): Q and K turned by position; 0: off.")
    alibi = T.Bool(False, help="ALiBi: add -m_h (i - j) to head h's scores (BLOOM's slopes).")
    softcap = T.Float(0.0, help="Soft-cap c: scores = c tanh(scores / c) (Gemma 2); 0: off.")
    sinks = T.Bool(False, help="A seeded sink logit per head joins each row's softmax, so rows "
                   "sum to less than one (gpt-oss).")
    top_k = T.Int(0, help="Each query keeps its top_k highest-scoring keys; 0: off.")

    def _variant_problem(self, name: str, value: Any) -> str:
        """Why variant trait ``name`` cannot take ``value`` now ('' if it can).

        An input other than text fixes the kind (and a pretrained model every variant).
        """
        fixed = self._source.fixed
        if name in fixed and value != fixed[name]:
            return (f"{name} is fixed at {fixed[name]!r} by {self._source.fixed_by}: only "
                    f"text input computes other attention kinds, got {value!r}")
        return "" if name in fixed else variant_problem(name, value, self.d_model)

    def _snap_variants(self) -> None:
        """After d_model changed: a kv_rank beyond it snaps to d_model.

        A notice says so when the latent is drawn (kind 'latent').
        """
        if self.kv_rank > self.d_model and "kv_rank" not in self._source.fixed:
            if self.kind == "latent":
                self.set_trait("notice", f"kv_rank {self.kv_rank} is larger than d_model "
                               f"{self.d_model}: snapped to {self.d_model}")
            self.kv_rank = self.d_model

    @property
    def kv_cache(self) -> str:
        """What a decoder caches per token and layer now, against multi-head attention."""
        return self._source.kv_cache(self._settings())
