"""Where the widget's arrays come from: a text, your own arrays, or a pretrained model.

Each input mode is a :class:`Source`.  For the widget's current :class:`Settings` it gives the
tokens and the trace to draw (:meth:`Source.trace`), and it says

* which controls it fixes, and at which values (:attr:`Source.fixed`; the widget validates
  them and disables their controls),
* which head counts it can show (:meth:`Source.head_options`, :meth:`Source.kv_options`),
* what a saved state needs to rebuild it (:meth:`Source.saved`, :meth:`Source.restore`),
* one line about itself (:meth:`Source.describe`), and one about what it fixes
  (:meth:`Source.fixed_line`),
* what its arrays are (the stage titles and formulas of :func:`~attention_widget.stages.
  source_stages`) and what each head does (:meth:`Traced.head_titles`, from
  :func:`~attention_widget.roles.head_roles`, or the designed heads' jobs).

A new input mode is one more subclass: give it a ``kind`` (the name saved in state files),
implement ``trace`` and ``restore``, override what differs.  Nothing else changes: the widget
has no mode checks.  Sources never touch widgets; they only compute.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np

from .cached import CachedAttention
from .designed import DESIGNED_INPUT_NOTE, designed_embed, designed_jobs, designed_params
from .engine import (
    AttentionParams,
    AttentionTrace,
    init_params,
)
from .inputs import embed, tokenize
from .long import LONG_THRESHOLD, LongTrace
from .roles import head_roles
from .stages import Stage, source_stages, summary, variant_stages
from .variant_source import (
    DEFAULT_SOURCE_TEXT,
    engine_variants,
    kv_cache_line,
    variant_trace,
)

__all__ = [
    "DEFAULT_TEXT",
    "MAX_TOKENS",
    "ArraysSource",
    "Progress",
    "Settings",
    "Source",
    "TextSource",
    "Traced",
    "check_text",
    "divisors",
    "mask_label",
    "restore_source",
    "text_tokens",
]

#: Longest text the widget draws (tokens).  Beyond it the widget shows a message.  Above
#: :data:`~attention_widget.long.LONG_THRESHOLD` tokens the trace is a block-wise
#: :class:`~attention_widget.long.LongTrace`.
MAX_TOKENS = 32768
#: Precision of a long trace: float32 takes half the memory and time of float64 (the full
#: trace's), and its weights differ from float64's by about 1e-6.
LONG_DTYPE: type = np.float32
DEFAULT_TEXT = "The animal didn't cross the street because it was too tired."

#: ``report(fraction, message)``: how a long computation says how far it is.
Progress = Callable[[float, str], None]


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending."""
    return list(_divisors(n))


@cache
def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


@dataclass(frozen=True)
class Settings:
    """The widget's settings that decide what is computed (its traits of the same names)."""

    text: str = DEFAULT_TEXT
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: as many as n_heads
    temperature: float = 1.0
    mask: str = "none"
    window: int = 3
    seed: int = 0
    positional: bool = True
    layer: int = 0
    show_special: bool = True
    weights: str = "random"  # or "designed": heads built to do known jobs (text only)
    # the attention variants (attention_widget.variant_source); 0 / False: off
    kind: str = "standard"  # or "latent" (DeepSeek's MLA) or "cross" (keys from source_text)
    kv_rank: int = 16  # latent: width of c_kv
    rope_dim: int = 0  # latent: width of the rotary key shared by all heads
    source_text: str = DEFAULT_SOURCE_TEXT  # cross: the text keys and values come from
    rope: float = 0.0  # RoPE base θ
    alibi: bool = False
    softcap: float = 0.0  # the cap c of c·tanh(scores / c)
    sinks: bool = False  # seeded sink logits, one per head
    top_k: int = 0  # keys kept per query
    part: str = "encoder"  # an encoder-decoder's "encoder", "decoder" or "cross" attention
    target: str = ""  # an encoder-decoder's decoder input

    @classmethod
    def of(cls, obj: Any) -> Settings:
        """The settings held by ``obj``'s attributes of the same names (e.g. a widget)."""
        return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})

    def window_for(self, seq_len: int) -> int | None:
        """Keys per query of the sliding mask (at most ``seq_len``), None for other masks."""
        return min(self.window, seq_len) if self.mask == "sliding" else None


@dataclass(frozen=True)
class Traced:
    """What a source computed for some settings: the tokens and the trace to draw.

    Attributes
    ----------
    tokens : list of str
        One per row of the trace (``seq_len``).
    trace : AttentionTrace or LongTrace
        A :class:`~attention_widget.long.LongTrace` above ``LONG_THRESHOLD`` tokens.
    params : AttentionParams or None
        The weights the trace was computed with, where there is one such object.
    mask : str
        The mask as the summary names it (``"sliding, window=3"``).
    layer : int or None
        The layer shown, for sources with layers.
    stages : dict of str to Stage
        The stages as this source describes them (:func:`~attention_widget.stages.source_stages`).
    special : tuple of bool, optional
        True for each special token ([CLS], BOS), where the source knows them.
    jobs : list of DesignedHead, optional
        The designed heads' jobs (``weights="designed"``).
    notes : tuple of str
        Lines to show with the weights (how the designed heads work, what X holds).
    unavailable : str
        Why only the weights are known ('' when every stage is): the other stages are then
        not drawn, and this is said in their place.
    key_tokens : list of str, optional
        One label per key column where the keys are not the tokens: a cross-attention's
        source tokens, or the tokens then DeepSeek V4's compressed entries.  None: the tokens.
    """

    tokens: list[str]
    trace: AttentionTrace | LongTrace
    params: AttentionParams | None = None
    mask: str = "none"
    layer: int | None = None
    stages: dict[str, Stage] = dataclasses.field(default_factory=lambda: source_stages("text"))
    special: tuple[bool, ...] | None = None
    jobs: list | None = None
    notes: tuple[str, ...] = ()
    measured: list | None = None  # roles measured by the source (e.g. before a cut)
    unavailable: str = ""
    key_tokens: list[str] | None = None

    @property
    def keys(self) -> list[str]:
        """One label per key column: :attr:`key_tokens`, or the tokens."""
        return self.tokens if self.key_tokens is None else self.key_tokens

    @property
    def shown_stages(self) -> dict[str, Stage]:
        """:attr:`stages` with the formulas of the trace's variants (RoPE, sinks, ...)."""
        return variant_stages(self.stages, self.trace)

    @property
    def summary(self) -> str:
        """One line stating what is drawn (:func:`attention_widget.stages.summary`)."""
        if self.unavailable:
            tr = self.trace
            return (f"seq_len={tr.seq_len}, n_heads={tr.n_heads}, weights only, mask={self.mask}"
                    + ("" if self.layer is None else f", layer={self.layer}"))
        return summary(self.trace, mask=self.mask, layer=self.layer)

    def roles(self) -> list:
        """Each head's measured role (:func:`~attention_widget.roles.head_roles`)."""
        if self.measured is not None:
            return list(self.measured)
        tr = self.trace
        if self.keys is not self.tokens or tr.x_kv is not None:  # keys of their own: the
            return []  # roles are about tokens
        special = None if self.special is None else np.array(self.special, dtype=bool)
        weights = tr.weights
        if tr.sink_weights is not None:  # the keys' share of each row, as if it were all
            weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-300)
        return head_roles(weights, self.tokens, special)

    def head_titles(self) -> list[str]:
        """``"head 2 · previous token 0.98"`` for each head; a designed head names its job."""
        if self.jobs is not None:
            return [f"head {j.head} · {j.label}" for j in self.jobs]
        roles = self.roles()
        if len(roles) != self.trace.n_heads:  # not measured (weights that are not a softmax's)
            return [f"head {h}" for h in range(self.trace.n_heads)]
        return [f"head {r.head} · {r.label}" for r in roles]


def mask_label(mask: str, window: int | None) -> str:
    """The mask as the summary names it: ``"sliding, window=3"``, ``"causal"``, ..."""
    return f"{mask}, window={window}" if mask == "sliding" else mask


def check_text(text: str, what: str = "text") -> None:
    """ValueError for a text with nothing but white space (``what``: the box's name)."""
    if not text.strip():
        raise ValueError(f"The {what} is empty: type a sentence to see its attention.")


class Source(ABC):
    """One input mode of the widget: what it draws, and what it lets the user change."""

    #: The mode's name in saved settings (``"text"``, ``"arrays"``, ``"pretrained"``).
    kind: ClassVar[str]
    #: Who fixes the fixed controls, as error messages name it.
    fixed_by: ClassVar[str] = ""
    #: Controls only this mode has (shown on its description line).
    own_controls: ClassVar[tuple[str, ...]] = ()
    #: What the mode fixes and what stays live, said after its description.
    note: ClassVar[str] = ""
    #: Whether :meth:`generate` can continue the text (a causal pretrained model).
    can_generate: bool = False
    #: Why a state file cannot rebuild this mode ('' if it can).
    not_saved: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type[Source]]] = {}

    n_layers: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Source._kinds[cls.kind] = cls

    @property
    def fixed(self) -> dict[str, Any]:
        """Settings this source decides, with their values (their controls are not drawn)."""
        return {}

    def default_scales(self, weights: str = "random") -> dict[str, str]:
        """The colour scales this source starts with (the widget's ``scales``): {} = shared."""
        return {}

    def check_heads(self, n_heads: int, d_model: int) -> None:
        """Raise ValueError, naming the choices, if ``n_heads`` cannot be shown."""
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} does not divide d_model={d_model}: choose one "
                             f"of {divisors(d_model)}")

    def head_options(self, d_model: int) -> list[int]:
        """The head counts the ``n_heads`` control offers at ``d_model``."""
        return [self.fixed["n_heads"]] if "n_heads" in self.fixed else divisors(d_model)

    def heads_shown(self, s: Settings) -> int:
        """The query heads of the attention drawn at ``s``: the focus head's choices."""
        return s.n_heads

    def kv_heads(self, s: Settings) -> int:
        """The number of key/value heads the trace will have."""
        return s.n_kv_heads or s.n_heads

    def kv_options(self, s: Settings) -> list[int]:
        """The key/value head counts the ``n_kv_heads`` control offers."""
        return [self.kv_heads(s)] if "n_kv_heads" in self.fixed else divisors(s.n_heads)

    def describe(self) -> str:
        """One line about the source, shown above the controls ('' for none)."""
        return ""

    def kv_cache(self, s: Settings) -> str:
        """What a decoder caches per token for ``s``, against multi-head attention.

        See :func:`~attention_widget.variant_source.kv_cache_line`; '' where it is not said.
        """
        return kv_cache_line(s)

    def layer_labels(self, s: Settings) -> list[str]:
        """One label per layer the ``layer`` control offers at ``s`` (``"layer 3"``)."""
        return [f"layer {i}" for i in range(self.n_layers)]

    def fixed_line(self) -> str:
        """What the source fixes, in one line ('' if nothing): its controls are not drawn."""
        fixed = self.fixed
        if not fixed:
            return ""
        shown = {"d_model": "d_model {}", "n_heads": "{} heads", "n_kv_heads": "{} kv heads",
                 "mask": "mask {}", "text": "the tokens", "seed": None, "positional": None,
                 "weights": None}
        order = ("text", "d_model", "n_heads", "n_kv_heads", "mask")
        parts = [shown[k].format(fixed[k]) for k in order
                 if k in fixed and fixed[k] is not None]
        what = ", ".join(parts)
        return f"Fixed by {self.fixed_by}: {what}." if what else f"Fixed by {self.fixed_by}."

    def is_long(self, s: Settings) -> bool:
        """Whether the trace of ``s`` is a long one (a LongTrace, computed in a worker thread).

        Cheap (no attention is computed); ValueError, TypeError for input the source cannot
        draw, as :meth:`trace` would raise.
        """
        return False

    @abstractmethod
    def trace(self, s: Settings, progress: Progress | None = None,
              cancel: object = None) -> Traced:
        """The tokens and trace for ``s``.

        ``progress(fraction, message)`` hears how far a long computation is; once ``cancel``
        (a ``threading.Event``) is set, a long one stops with
        :class:`~attention_widget.long.AttentionCancelled`.

        Raises
        ------
        ValueError, TypeError
            For input the source cannot draw, with a message for the user.
        """

    def variants(self, s: Settings, temperatures: Sequence[float],
                 head_counts: Sequence[int] | None = None) -> dict[str, AttentionTrace]:
        """Traces at other temperatures and head counts than ``s``'s, by label.

        ``head_counts`` defaults to up to three of the offered ones of at most 16 heads.

        Raises
        ------
        ValueError
            For a head count the source does not offer.
        """
        options = self.head_options(s.d_model)
        if head_counts is None:
            head_counts = [h for h in options if h != s.n_heads and h <= 16][-3:]
        bad = [h for h in head_counts if h not in options]
        if bad:
            raise ValueError(f"head_counts {bad} are not available here: choose from {options}")
        out = {f"temperature {t:g}": self.trace(dataclasses.replace(s, temperature=t)).trace
               for t in temperatures if t != s.temperature}
        for h in head_counts:
            out[f"{h} heads"] = self.trace(dataclasses.replace(s, n_heads=h, n_kv_heads=None)).trace
        return out

    def generate(self, s: Settings, max_new_tokens: int, progress: Progress | None = None) -> Any:
        """Continue the text token by token (see :attr:`can_generate`).

        Raises
        ------
        ValueError
            Here: only a causal pretrained model generates.
        """
        raise ValueError("only a causal pretrained model (GPT-2, Llama, Qwen3, ...) can "
                         "generate: use AttentionWidget.from_pretrained with one")

    def layer_weights(self, s: Settings) -> Any:
        """Every layer's attention weights for ``s``, for the model view (None: one layer).

        Returns
        -------
        Attentions or None
            ``layers`` (n_layers arrays (n_heads, n, n)), ``tokens`` and ``special``, of every
            token (special tokens included), at temperature 1.
        """
        return None

    def saved(self) -> dict[str, Any]:
        """What a state file stores to rebuild this source besides the widget's traits."""
        return {"mode": self.kind, "model_path": None}

    @classmethod
    @abstractmethod
    def restore(cls, state: Any) -> Source:
        """Rebuild the source from a :class:`attention_widget.state.StateFile`."""


def restore_source(state: Any) -> Source:
    """The source a state file was saved from (KeyError for an unknown mode)."""
    return Source._kinds[state.settings["mode"]].restore(state)


def text_tokens(text: str, what: str = "text") -> list[str]:
    """The tokens of ``text`` (ValueError if it has none or more than MAX_TOKENS).

    ``what`` names the text in the messages (``"source text"`` for cross-attention's).
    """
    check_text(text, what)
    tokens = tokenize(text)
    if not tokens:
        raise ValueError(f"The {what} has no words or symbols to attend over.")
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"The {what} has {len(tokens):,} tokens; the widget draws at most "
                         f"{MAX_TOKENS:,}. Shorten it.")
    return tokens


class TextSource(Source):
    """A sentence, attended over with seeded random weights, or with designed heads.

    ``weights="random"``: tokenized and embedded (token vectors + positional code,
    :mod:`attention_widget.inputs`), the weights from :func:`attention_widget.init_params`.
    ``weights="designed"``: X from :func:`~attention_widget.designed.designed_embed` (which word
    in the first half of the columns, where in the second; the position half is zero without
    positional encodings) and W_Q, W_K from :func:`~attention_widget.designed.designed_params`:
    head ``h`` does job ``h % 4`` (previous token, duplicate token, first token, local window).
    """

    kind = "text"

    def __init__(self) -> None:
        self._x: tuple | None = None  # (key, x)
        self._params: tuple | None = None  # (key, params)
        self._tokens: tuple[str, list[str]] | None = None  # (text, tokens)
        self._attention = CachedAttention()

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` (:func:`text_tokens`), kept while the text stays."""
        if self._tokens is None or self._tokens[0] != text:
            self._tokens = (text, text_tokens(text))
        return self._tokens[1]

    def is_long(self, s: Settings) -> bool:
        """More than ``LONG_THRESHOLD`` tokens."""
        return len(self.tokens(s.text)) > LONG_THRESHOLD

    def trace(self, s: Settings, progress: Progress | None = None,
              cancel: object = None) -> Traced:
        """Tokens, X, the weights and their trace for ``s`` (see :class:`Source`)."""
        tokens = self.tokens(s.text)
        x, params = self.embedded(tokens, s), self.weights(s)
        window = s.window_for(len(tokens))
        stages = source_stages("text", weights=s.weights, positional=s.positional)
        if s.kind != "standard":
            return self._other_kind(tokens, x, params, s, stages)
        trace = self._attention(x, params, n_heads=s.n_heads, n_kv_heads=s.n_kv_heads,
                                temperature=s.temperature, mask=s.mask, window=window,
                                progress=progress, cancel=cancel, variants=engine_variants(s),
                                long_dtype=LONG_DTYPE)
        if s.weights != "designed":
            return Traced(tokens, trace, params, mask_label(s.mask, window), stages=stages)
        jobs = designed_jobs(s.d_model, s.n_heads, s.n_kv_heads)
        return Traced(tokens, trace, params, mask_label(s.mask, window), stages=stages,
                      jobs=jobs, notes=_designed_notes(jobs, s))

    def _other_kind(self, tokens: list[str], x: np.ndarray, params: AttentionParams,
                    s: Settings, stages: dict[str, Stage]) -> Traced:
        """Latent or cross-attention (:func:`~attention_widget.variant_source.variant_trace`)."""
        if len(tokens) > LONG_THRESHOLD:
            raise ValueError(f"kind={s.kind!r} is drawn up to {LONG_THRESHOLD} tokens; shorten "
                             "the text or choose kind 'standard'")
        source = x_kv = None
        if s.kind == "cross":
            source = text_tokens(s.source_text, "source text")
            x_kv = embed(source, s.d_model, seed=s.seed, positional=s.positional)
        trace, used = variant_trace(s, x, params, x_kv)
        return Traced(tokens, trace, used, mask_label(s.mask, s.window_for(len(tokens))),
                      stages=stages, key_tokens=source)

    def embedded(self, tokens: list[str], s: Settings) -> np.ndarray:
        """X from :meth:`new_x`, the same object while the tokens and its settings stay."""
        key = (tuple(tokens), s.d_model, s.seed, s.positional, s.weights)
        if self._x is None or self._x[0] != key:
            self._x = (key, self.new_x(tokens, s))
        return self._x[1]

    def weights(self, s: Settings) -> AttentionParams:
        """The weights from :meth:`new_weights`, one object while :meth:`weights_key` stays."""
        key = self.weights_key(s)
        if self._params is None or self._params[0] != key:
            self._params = (key, self.new_weights(s))
        return self._params[1]

    def default_scales(self, weights: str = "random") -> dict[str, str]:
        """Designed heads: Q, K, V and the scores per head.

        Their query weights are scaled for each job (a local-window head's scores are some
        hundreds, a previous-token head's about ten): one scale would leave the others blank.
        """
        return {"qkv": "per head", "scores": "per head"} if weights == "designed" else {}

    def weights_key(self, s: Settings) -> tuple:
        """The settings :meth:`new_weights` depends on.

        Heads are slices of one projection: without grouped K/V heads the seeded weights do
        not depend on n_heads, so a head-count change keeps them.  Designed heads do: each
        head's W_Q block is built for its job and its width.
        """
        if s.weights == "designed":
            return ("designed", s.d_model, s.seed, s.n_heads, s.n_kv_heads)
        return (s.d_model, s.seed, None if s.n_kv_heads is None else (s.n_heads, s.n_kv_heads))

    def new_x(self, tokens: list[str], s: Settings) -> np.ndarray:
        """X, shape (seq_len, d_model): token vectors plus the positional code (or designed)."""
        if s.weights == "designed":
            x = designed_embed(tokens, s.d_model, seed=s.seed)  # [seq, d_model]
            if not s.positional:
                x[:, s.d_model // 2:] = 0.0  # the position half: no position code
            return x
        return embed(tokens, s.d_model, seed=s.seed, positional=s.positional)

    def new_weights(self, s: Settings) -> AttentionParams:
        """The seeded random weights (:func:`attention_widget.init_params`), or designed ones."""
        if s.weights == "designed":
            return designed_params(s.d_model, s.n_heads, s.n_kv_heads, seed=s.seed)
        return init_params(s.d_model, s.n_heads, s.n_kv_heads, seed=s.seed)

    @classmethod
    def restore(cls, state: Any) -> TextSource:
        """A text source (the text and settings are the widget's)."""
        return cls()


def _designed_notes(jobs: list, s: Settings) -> tuple[str, ...]:
    """The lines shown with designed heads: what X holds, each head's how, who cannot."""
    lines = [DESIGNED_INPUT_NOTE + ("." if s.positional else
                                    "; positional encodings are off: the position half is 0.")]
    cannot = [j for j in jobs if not j.works]
    if cannot:
        heads = ", ".join(str(j.head) for j in cannot)
        lines.append(f"Heads {heads} cannot do their job at d_model {s.d_model} with "
                     f"{s.n_heads} heads (d_head {s.d_model // s.n_heads}): their W_Q is zero, "
                     "so their weights are even.")
    lines += [f"head {j.head} · {j.job}: {j.how}" for j in jobs]
    return tuple(lines)




from .arrays_source import ArraysSource  # noqa: E402  (it builds on Source)
