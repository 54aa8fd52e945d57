"""attention_widget: see multi-head self-attention, stage by stage, live in Jupyter.

The engine (:mod:`attention_widget.engine`, :mod:`attention_widget.inputs`) needs only NumPy;
the widget is imported lazily, so ``import attention_widget`` does not load ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .aggregate import attention_rollout, head_mean
from .attentions import Attentions, normalize_attentions, run_transformers
from .designed import (
    DESIGNED_INPUT_NOTE,
    DESIGNED_JOBS,
    DesignedHead,
    designed_embed,
    designed_jobs,
    designed_notes,
    designed_params,
    position_code,
    shift_matrix,
)
from .engine import (
    MEMORY_LIMIT_BYTES,
    AttentionParams,
    AttentionTrace,
    causal_mask,
    estimate_memory,
    init_params,
    multi_head_attention,
    sliding_window_mask,
    with_temperature,
)
from .inputs import embed, positional_encoding, tokenize
from .long import LongTrace, long_attention, long_with_temperature
from .pretrained import load_pretrained
from .roles import HeadRole, head_roles

__version__ = "0.1.0"

__all__ = [
    "DESIGNED_INPUT_NOTE",
    "DESIGNED_JOBS",
    "MEMORY_LIMIT_BYTES",
    "AttentionParams",
    "AttentionTrace",
    "AttentionWidget",
    "Attentions",
    "DesignedHead",
    "HeadRole",
    "LongTrace",
    "__version__",
    "attention_rollout",
    "causal_mask",
    "designed_embed",
    "designed_jobs",
    "designed_notes",
    "designed_params",
    "embed",
    "estimate_memory",
    "head_mean",
    "head_roles",
    "init_params",
    "load_pretrained",
    "long_attention",
    "long_with_temperature",
    "multi_head_attention",
    "normalize_attentions",
    "position_code",
    "positional_encoding",
    "run_transformers",
    "shift_matrix",
    "sliding_window_mask",
    "tokenize",
    "with_temperature",
]

if TYPE_CHECKING:
    from .widget import AttentionWidget


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension: kernel websockets without Nagle (see ``server.py``)."""
    return [{"module": "attention_widget.server"}]


def __getattr__(name: str) -> Any:
    if name == "AttentionWidget":
        from .widget import AttentionWidget

        return AttentionWidget
    raise AttributeError(f"module 'attention_widget' has no attribute {name!r}")
