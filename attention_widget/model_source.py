"""A pretrained model as the widget's source: the real attention of one of its layers.

:class:`PretrainedSource` runs a model of :mod:`attention_widget.pretrained` (NumPy, no torch)
and gives the widget one layer's trace, as the model's family describes it: its layer kinds in
the ``layer`` control (``"layer 3 · sliding, window 4096"``), its stage titles and formulas
(:func:`~attention_widget.stages.source_stages`), and one label per key column where a layer
has keys that are not its tokens (DeepSeek V4's compressed entries).  An encoder-decoder (BART)
also shows its decoder: ``part`` picks the encoder's self-attention, the decoder's causal
self-attention over the ``target`` text, or the cross-attention, whose queries are the target's
tokens and whose keys are the source's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .controls import progress_bar, show_now
from .engine import AttentionTrace
from .long import LONG_THRESHOLD, LongTrace
from .roles import head_roles
from .sources import DEFAULT_TEXT, Progress, Settings, Source, Traced, check_text
from .stages import source_stages
from .variant_source import VARIANT_DEFAULTS

__all__ = ["PARTS", "PretrainedConstructor", "PretrainedSource"]

#: What an encoder-decoder's ``part`` setting can show.
PARTS = ("encoder", "decoder", "cross")


class PretrainedSource(Source):
    """The real attention of one layer of a pretrained model (NumPy forward, no torch).

    Parameters
    ----------
    model : PretrainedModel or path
        A model from :func:`attention_widget.pretrained.load_pretrained`, or the checkpoint
        folder to load it from.
    progress : callable(fraction, message), optional
        Receives the loading's and the model's progress reports instead of the widget's bar
        while set (e.g. a loading bar shown until the first diagram is drawn).

    Notes
    -----
    d_model, the heads, the mask, positional encodings and seed are the model's.  Layer,
    temperature and text stay live; special tokens ([CLS], [SEP], BOS) can be hidden.  An
    encoder-decoder adds ``part`` (encoder, decoder or cross-attention) and ``target``.
    """

    kind = "pretrained"
    own_controls = ("layer", "show_special")
    note = "Layer, head, query, temperature and text stay live."

    def __init__(self, model: Any, progress: Progress | None = None) -> None:
        from .pretrained import PretrainedModel, load_pretrained

        if not isinstance(model, PretrainedModel):
            model = load_pretrained(model, progress=progress)
        self.model = model
        self.n_layers = model.n_layers
        self.progress = progress
        self.fixed_by = f"the pretrained {model.family_name}"
        #: Whether the model has a decoder reading the encoder's output (BART).
        self.encoder_decoder = hasattr(model, "cross_trace")
        if self.encoder_decoder:
            self.own_controls = (*self.own_controls, "part", "target")
        self._cut: tuple | None = None  # the stages before the softmax without special tokens

    @property
    def fixed(self) -> dict[str, Any]:
        """The architecture: d_model, heads, mask; no seed or positional code of ours."""
        m = self.model
        return {"d_model": m.d_model, "n_heads": m.n_heads,
                "n_kv_heads": None if m.n_kv_heads == m.n_heads else m.n_kv_heads,
                "mask": "causal" if m.causal else "none", "seed": 0, "positional": False,
                "weights": "random", **VARIANT_DEFAULTS}

    def fixed_line(self) -> str:
        """What the checkpoint fixes; an encoder-decoder's for each of its parts."""
        if not self.encoder_decoder:
            return super().fixed_line()
        m = self.model
        return (f"Fixed by {self.fixed_by}: d_model {m.d_model}; the encoder {m.n_heads} heads, "
                f"mask none; the decoder {m.n_decoder_heads} heads, mask causal (its "
                "cross-attention sees every source token).")

    def heads_shown(self, s: Settings) -> int:
        """An encoder-decoder's decoder may have another head count than its encoder."""
        if self.encoder_decoder and s.part != "encoder":
            return self.model.n_decoder_heads
        return s.n_heads

    def default_scales(self, weights: str = "random") -> dict[str, str]:
        """Robust scales for every signed stage: a few outliers would wash out the rest."""
        return {key: "robust" for key in ("x", "qkv", "scores", "outputs", "concat")}

    def describe(self) -> str:
        """The model: family, layers, heads, widths."""
        return self.model.describe()

    def kv_cache(self, s: Settings) -> str:
        """Not said: a model's head width and cache layout are its own."""
        return ""

    def layer_labels(self, s: Settings) -> list[str]:
        """Each layer with its kind: ``"layer 3 · sliding, window 4096"``.

        An encoder-decoder's are the layers of the ``part`` shown (``"decoder layer 1 ·
        cross-attention"``).
        """
        m = self.model
        if not self.encoder_decoder:
            return [f"layer {i} · {m.layer_kind(i)}" for i in range(m.n_layers)]
        if s.part == "encoder":
            return [f"encoder layer {i} · bidirectional" for i in range(m.n_layers)]
        kind = "cross-attention" if s.part == "cross" else "causal"
        return [f"decoder layer {i} · {kind}" for i in range(m.n_decoder_layers)]

    def is_long(self, s: Settings) -> bool:
        """More than ``LONG_THRESHOLD`` tokens, special ones included.

        An encoder-decoder's decoder and cross-attention are drawn whole (their queries are the
        target's tokens; see :meth:`_decoder_trace`): only its encoder reads a long text.
        """
        check_text(s.text)
        if self.encoder_decoder and s.part != "encoder":
            return False
        return self.model.encode(s.text).ids.size > LONG_THRESHOLD

    @contextlib.contextmanager
    def _reporting(self, progress: Progress | None, cancel: object) -> Iterator[None]:
        """The model reports to ``progress`` (or the loading bar) and stops on ``cancel``."""
        model = self.model
        before = model.progress, model.cancel
        model.progress, model.cancel = self.progress or progress, cancel
        try:
            yield
        finally:
            model.progress, model.cancel = before

    def trace(self, s: Settings, progress: Progress | None = None,
              cancel: object = None) -> Traced:
        """The model's attention at ``s.layer`` (special tokens left out if hidden)."""
        check_text(s.text)
        if self.encoder_decoder and s.part != "encoder":
            return self._decoder_trace(s, progress, cancel)
        model = self.model
        tokens = model.tokenize(s.text)  # (ValueError beyond the model's positions)
        if len(tokens) > LONG_THRESHOLD and not s.show_special:
            raise ValueError(f"Above {LONG_THRESHOLD} tokens special tokens are always shown; "
                             "tick 'special tokens'.")
        with self._reporting(progress, cancel):
            trace = model.trace(s.text, s.layer, temperature=s.temperature)
        special = np.array(model.special_token_mask(s.text), dtype=bool)
        n = len(tokens)
        long = isinstance(trace, LongTrace)
        # keys beyond the tokens (compressed entries) are named by the model
        labels = None if long or trace.weights.shape[-1] == n else model.key_labels(
            s.text, s.layer)
        # each head's role over all its tokens: hidden special tokens still take weight
        measured = None if long else head_roles(trace.weights[..., :n], tokens, special)
        if not s.show_special:
            keep = _kept(special)
            # key columns beyond the tokens all stay
            keys = np.concatenate([keep, np.arange(n, trace.k.shape[1])])
            tokens, trace, special = [tokens[i] for i in keep], self._without(
                trace, keep, keys), special[keep]
            labels = None if labels is None else tokens + labels[n:]
        stages = source_stages("pretrained", family=model.model_type, layer=s.layer,
                               layer_kind=model.layer_kind(s.layer))
        return Traced(tokens, trace, None, s.mask, s.layer, stages=stages,
                      special=tuple(bool(b) for b in special), measured=measured,
                      key_tokens=labels)

    def _decoder_trace(self, s: Settings, progress: Progress | None,
                       cancel: object) -> Traced:
        """The decoder's causal self-attention over the target, or its cross-attention."""
        if not s.target.strip():
            raise ValueError("The target is empty: type the decoder's input text.")
        model, cross = self.model, s.part == "cross"
        tokens, special = model.tokenize(s.target), np.array(
            model.special_token_mask(s.target), dtype=bool)
        if len(tokens) > LONG_THRESHOLD:
            raise ValueError(f"The target has {len(tokens):,} tokens; the decoder and its "
                             f"cross-attention are drawn up to {LONG_THRESHOLD}. Shorten it.")
        sources = model.tokenize(s.text)
        run = model.cross_trace if cross else model.decoder_trace
        with self._reporting(progress, cancel):
            trace = run(s.text, s.target, s.layer, temperature=s.temperature)
        # roles name a head's habit over its own tokens: not defined across two texts
        measured = None if cross else head_roles(trace.weights, tokens, special)
        keys = sources if cross else None
        if not s.show_special:
            rows = _kept(special)
            cols = _kept(np.array(model.special_token_mask(s.text), dtype=bool)) if cross else rows
            tokens, trace, special = [tokens[i] for i in rows], self._without(
                trace, rows, cols), special[rows]
            keys = [sources[j] for j in cols] if cross else None
        stages = source_stages("pretrained", family=model.model_type, layer=s.layer,
                               part=s.part)
        return Traced(tokens, trace, None, "none" if cross else "causal", s.layer,
                      stages=stages, special=tuple(bool(b) for b in special),
                      measured=measured, key_tokens=keys)

    @property
    def can_generate(self) -> bool:  # type: ignore[override]
        """A causal model generates."""
        return bool(self.model.causal)

    def generate(self, s: Settings, max_new_tokens: int, progress: Progress | None = None) -> Any:
        """Continue ``s.text`` greedily (:meth:`PretrainedModel.generate`); a Generation."""
        check_text(s.text)
        model = self.model
        before, model.progress = model.progress, self.progress or progress
        try:
            return model.generate(s.text, max_new_tokens)
        finally:
            model.progress = before

    def layer_weights(self, s: Settings) -> Any:
        """Every layer's attention over ``s.text`` as the model computes it (temperature 1)."""
        from .attentions import Attentions

        check_text(s.text)
        model = self.model
        layers = model.attentions(s.text)  # cached per text, as the trace's layers are
        return Attentions(list(layers), model.tokenize(s.text),
                          list(model.special_token_mask(s.text)))

    def _without(self, trace: AttentionTrace, rows: np.ndarray,
                 keys: np.ndarray) -> AttentionTrace:
        """``trace`` with only the query rows ``rows`` and the key columns ``keys``.

        The stages before the softmax are the model's cached arrays while only the
        temperature changes: they are cut once, so that the figures see the same arrays and
        skip them.
        """
        sq = np.ix_(np.arange(trace.n_heads), rows, keys)
        cut = self._cut
        if (cut is None or cut[0] is not trace.scores or cut[1] is not trace.x
                or not np.array_equal(cut[2], rows) or not np.array_equal(cut[3], keys)):
            cut = (trace.scores, trace.x, rows, keys, {
                "x": trace.x[rows], "q": trace.q[:, rows], "k": trace.k[:, keys],
                "v": trace.v[:, keys], "scores": trace.scores[sq],
                "mask": trace.mask[np.ix_(rows, keys)],
                "x_kv": None if trace.x_kv is None else trace.x_kv[keys],
                "latent": None if trace.latent is None else trace.latent[keys]})
            self._cut = cut
        return dataclasses.replace(
            trace, **cut[4], weights=trace.weights[sq], head_outputs=trace.head_outputs[:, rows],
            concat=trace.concat[rows], output=trace.output[rows], entropy=trace.entropy[:, rows],
            kept=None if trace.kept is None else trace.kept[sq],
            sink_weights=None if trace.sink_weights is None else trace.sink_weights[:, rows])

    def saved(self) -> dict[str, Any]:
        """The checkpoint folder, read again on load."""
        return {"mode": self.kind, "model_path": os.fspath(self.model.path)}

    @classmethod
    def restore(cls, state: Any) -> PretrainedSource:
        """Load the checkpoint folder the state names."""
        return cls(state.settings["model_path"])


def _kept(special: np.ndarray) -> np.ndarray:
    """The indices of the tokens that are not special (ValueError if there are none)."""
    keep = np.flatnonzero(~special)
    if keep.size == 0:
        raise ValueError("The text has only special tokens; show them or add words.")
    return keep


class PretrainedConstructor:
    """:class:`~attention_widget.widget.AttentionWidget`'s constructor from a pretrained model."""

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | Any, text: str = DEFAULT_TEXT, *,
                        layer: int = 0, temperature: float = 1.0, show_special: bool = True,
                        target: str | None = None, part: str = "encoder", progress: bool = True,
                        **kwargs: Any) -> Any:
        """Show the real attention of a pretrained model (NumPy forward, no torch).

        Parameters
        ----------
        model : path, hub id or PretrainedModel
            A Hugging Face checkpoint folder (``config.json``, ``model.safetensors``,
            ``tokenizer.json``), a hub id such as ``"Qwen/Qwen3-0.6B"`` (read from the local
            cache, or downloaded when ``huggingface_hub`` is installed and the network is
            there: ``pip install attention-widget[hub]``), or a model from
            :func:`attention_widget.pretrained.load_pretrained`.  Needs the ``models`` extra:
            ``pip install attention-widget[models]``.
        text : str
            Tokenized with the model's own tokenizer.
        layer : int
            Which layer's attention to show (0-based).
        temperature : float
            Re-softmax the real scores with ``T`` (1 = the model as trained).
        show_special : bool
            Show special tokens ([CLS], [SEP], BOS).
        target : str, optional
            For an encoder-decoder model (BART): the decoder's input; default the text.
        part : {"encoder", "decoder", "cross"}
            For an encoder-decoder model: the encoder's self-attention over ``text``, the
            decoder's causal self-attention over ``target``, or the cross-attention (the
            target's tokens as queries, the text's as keys).
        progress : bool
            Show a progress bar while the checkpoint is read and layers run.

        Notes
        -----
        d_model, heads, key/value heads, mask, positional encodings and seed are fixed by the
        trained model (another value given for one is a TraitError): their controls are not
        drawn, and one line says what the model fixes.
        Layer, head, query, temperature and text stay live.  Every head's title carries its
        measured role; the signed stages start on robust colour scales (``scales``).
        """
        box, report = progress_bar("loading")
        shown = progress and show_now(box)
        try:  # loading and the first diagram report to this bar
            source = PretrainedSource(model, progress=report)
            w = cls(text, layer=layer, temperature=temperature, show_special=show_special,
                    part=part, target=text if target is None else target, source=source,
                    **kwargs)
        finally:
            if shown:
                box.close()
        source.progress = None  # later changes report into the widget's own bar
        return w
