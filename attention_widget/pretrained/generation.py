"""Generation with a key/value cache, step by step, for every causal family.

The prompt runs once through every layer (its keys and values kept in one
:class:`~attention_widget.pretrained.family.LayerCache` per layer); then each step runs only
the newest token: its query attends the cached keys and its own, its key and value join the
cache, and the final hidden state gives the next token::

    h = embed([token], [p])                                 # (1, d_model)
    for i in range(n_layers):
        h = run_block(i, h, [p], cache[i])                  # attends keys 0..p of layer i
    logits = logits(final_norm(h))                          # (1, vocab)
    token = argmax(logits)                                  # or a sample of softmax(logits / T)

Nothing in this module is specific to a family: :meth:`~.family.Family.run_block`,
:meth:`~.family.Family.extend_cache`, :meth:`~.family.Family.logits` and
:meth:`~.family.Family.cache_width` are the family's (with defaults that fit GPT-2, Llama and
Qwen3).  Each step records what the attention of the new token looked like in every layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_int, check_temperature
from ..engine import softmax
from .family import LayerCache

if TYPE_CHECKING:
    from . import PretrainedModel

__all__ = ["BYTES_PER_NUMBER", "Generation", "GenerationStep", "generate", "stop_token_ids"]

#: Bytes of one cached number: this package computes keys and values in float32.
BYTES_PER_NUMBER = 4


@dataclass(frozen=True)
class GenerationStep:
    """One generated token and the attention of the token read to choose it.

    Step ``t`` reads the token at ``position`` (the last prompt token for ``t = 0``, the token
    generated at step ``t - 1`` after that) and chooses the next one.

    Attributes
    ----------
    index : int
        ``t``, from 0.
    position : int
        Position of the token read; its query attends keys ``0 .. position``.
    token_id : int
        The token chosen.
    token : str
        Its readable string (see :attr:`~attention_widget.pretrained.Encoding.display`).
    probability : float
        Its probability under ``softmax(logits / temperature)`` (temperature 1 when greedy).
    attentions : list of ndarray, n_layers arrays of shape (n_heads, 1, n_keys), float32
        The query row of the token read against the cached keys, per layer and head
        (read-only): ``attentions[layer][head, 0, j]`` is the weight of key ``j``.
    key_positions : list of ndarray of int, n_layers arrays of shape (n_keys,)
        Position of each key of those rows (``0 .. position`` for one key per token).
    cache_entries : tuple of int, one per layer
        Keys and values a cache must hold per layer after this step (fewer than the tokens
        in a sliding-window layer).
    cache_numbers : tuple of int, one per layer
        ``cache_entries`` times the layer's :meth:`~.family.Family.cache_width`.
    cache_bytes : tuple of int, one per layer
        ``cache_numbers`` times :data:`BYTES_PER_NUMBER`.
    """

    index: int
    position: int
    token_id: int
    token: str
    probability: float
    attentions: list[np.ndarray]
    key_positions: list[np.ndarray]
    cache_entries: tuple[int, ...]
    cache_numbers: tuple[int, ...]
    cache_bytes: tuple[int, ...]


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` returns: the tokens and, step by step, the attention that chose them.

    Attributes
    ----------
    text : str
        The prompt.
    prompt_ids : ndarray of int64, shape (n_prompt,)
        Its token ids, special tokens included.
    prompt_tokens : list of str
        Their readable strings.
    ids : ndarray of int64, shape (n_new,)
        The generated token ids (an end-of-sequence token included when it ended the text).
    tokens : list of str
        Their readable strings.
    steps : list of GenerationStep, length n_new
    prompt_attentions : list of ndarray, n_layers arrays of shape (n_heads, n_prompt, n_prompt)
        Every layer's attention over the prompt (float32, read-only), as
        :meth:`~attention_widget.pretrained.PretrainedModel.attentions` gives it.
    cache_width : tuple of int, one per layer
        Numbers cached per token (per entry): ``2 * n_kv_heads * d_head`` for multi-head and
        grouped-query attention.
    stop_reason : {"max_new_tokens", "end of sequence"}
        Why generation stopped.
    greedy : bool
    temperature : float
        Of the sampling (1.0 when greedy).
    seed : int or None
        Of the sampling.
    """

    text: str
    prompt_ids: np.ndarray
    prompt_tokens: list[str]
    ids: np.ndarray
    tokens: list[str]
    steps: list[GenerationStep]
    prompt_attentions: list[np.ndarray]
    cache_width: tuple[int, ...]
    stop_reason: str
    greedy: bool
    temperature: float
    seed: int | None
    completion: str

    @property
    def all_ids(self) -> np.ndarray:
        """Prompt and generated ids, shape (n_prompt + n_new,)."""
        return np.concatenate([self.prompt_ids, self.ids])

    @property
    def all_tokens(self) -> list[str]:
        """Prompt and generated token strings."""
        return [*self.prompt_tokens, *self.tokens]


def stop_token_ids(model: PretrainedModel) -> frozenset[int]:
    """The end-of-sequence token ids that end a generation, as ``transformers`` reads them.

    ``eos_token_id`` (an int or a list) of the folder's ``generation_config.json`` when it
    has one, else of ``config.json``; none when neither sets it.
    """
    config = model.config
    path = model.path / "generation_config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    eos = config.get("eos_token_id") if isinstance(config, dict) else None
    if eos is None:
        return frozenset()
    eos = eos if isinstance(eos, list) else [eos]
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        raise ValueError(f"{path if path.is_file() else 'config.json'}: eos_token_id must be "
                         f"an integer or a list of integers, got {eos!r}")  # fmt: skip
    return frozenset(eos)


def _check_arguments(
    model: PretrainedModel, n_prompt: int, max_new_tokens: object, greedy: object,
    temperature: object, seed: object,
) -> float:  # fmt: skip
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    if not isinstance(greedy, bool):
        raise TypeError(f"greedy must be True or False, got {greedy!r}")
    if seed is not None:
        check_int("seed", seed, minimum=0)
    temperature = check_temperature(temperature)
    if greedy and (temperature != 1.0 or seed is not None):
        raise ValueError("temperature and seed apply to sampling only; pass greedy=False")
    if n_prompt + max_new_tokens > model.max_positions:
        raise ValueError(
            f"the prompt has {n_prompt} tokens and max_new_tokens={max_new_tokens}: "
            f"{n_prompt + max_new_tokens} positions, but {model.name} has only "
            f"{model.max_positions} (max_position_embeddings); ask for at most "
            f"{max(model.max_positions - n_prompt, 0)} new tokens or shorten the prompt"
        )
    return temperature


def _forward(
    model: PretrainedModel, ids: np.ndarray, positions: np.ndarray, caches: list[LayerCache]
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """New tokens through every layer, with the caches: last hidden state and attentions."""
    h = model.embed(ids, positions)  # (n_new, d_model)
    weights, keys = [], []
    for i, cache in enumerate(caches):
        h, layer = model.run_block(i, h, positions, cache)
        w = layer.attended.weights  # (n_heads, n_new, n_keys)
        w.setflags(write=False)
        weights.append(w)
        keys.append(cache.key_positions)
    return h[-1:], weights, keys


def _step(
    model: PretrainedModel, t: int, position: int, token: int, probability: float,
    weights: list[np.ndarray], keys: list[np.ndarray], caches: list[LayerCache],
    widths: tuple[int, ...],
) -> GenerationStep:  # fmt: skip
    """The record of step ``t``: the token chosen, each layer's last query row, the cache."""
    entries = tuple(c.entries(position) for c in caches)
    sizes = tuple(e * w for e, w in zip(entries, widths, strict=True))
    return GenerationStep(
        index=t, position=position, token_id=token,
        token=model.tokenizer.strings(np.array([token]))[1][0], probability=probability,
        attentions=[w[:, -1:] for w in weights], key_positions=keys, cache_entries=entries,
        cache_numbers=sizes, cache_bytes=tuple(n * BYTES_PER_NUMBER for n in sizes),
    )  # fmt: skip


def generate(
    model: PretrainedModel,
    text: str,
    max_new_tokens: int,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int | None = None,
    on_step: Callable[[GenerationStep], Any] | None = None,
) -> Generation:
    """Continue ``text`` token by token with a key/value cache (see the module docstring).

    Also :meth:`PretrainedModel.generate <attention_widget.pretrained.PretrainedModel.generate>`:
    ``model.generate(text, max_new_tokens)``.

    Parameters
    ----------
    model : PretrainedModel
        A causal model.
    text : str
        The prompt, tokenized with special tokens as the model does.
    max_new_tokens : int
        Tokens to generate, at least 1; fewer when the model ends the text first (its
        end-of-sequence token, see :func:`stop_token_ids`).
    greedy : bool, default True
        Choose the token with the largest logit (as ``transformers``' ``generate`` with
        ``do_sample=False``).  False: draw it from ``softmax(logits / temperature)`` with a
        NumPy generator seeded by ``seed`` (reproducible, but not the draws of torch).
    temperature : float, default 1.0
        Sampling temperature (only with ``greedy=False``).
    seed : int, optional
        Sampling seed (only with ``greedy=False``); None draws a fresh one.
    on_step : callable(GenerationStep), optional
        Called after each step, e.g. to show tokens as they come.  Progress goes to
        ``model.progress`` (``"token 3/10"``, then ``"done"``).

    Returns
    -------
    Generation
        ``ids`` and ``tokens`` generated, and ``steps``: per step, each layer's attention row
        (n_heads, 1, n_keys) of the token read and the cache size per layer in numbers and
        bytes.

    Raises
    ------
    ValueError
        For a bidirectional model, ``max_new_tokens < 1``, a context (prompt plus new tokens)
        longer than the model's positions, or a bad text.
    TypeError
        For arguments of the wrong type.

    Examples
    --------
    >>> out = model.generate("the cat sat", 5)  # doctest: +SKIP
    >>> out.tokens, out.steps[0].attentions[0].shape  # doctest: +SKIP
    ([' on', ' the', ' mat', ' and', ' the'], (12, 1, 4))
    """
    if not model.causal:
        raise ValueError(
            f"{model.name} is a {model.family_name}: its attention is bidirectional, so it "
            "cannot generate text; generate needs a causal decoder (GPT-2, Llama, Qwen3, ...)"
        )
    enc = model.encode(text)
    temperature = _check_arguments(model, enc.ids.size, max_new_tokens, greedy, temperature,
                                   seed)  # fmt: skip
    rng = None if greedy else np.random.default_rng(seed)
    steps, prompt_attentions, reason = _run(model, enc.ids, max_new_tokens, temperature, rng,
                                            on_step)  # fmt: skip
    new_ids = np.array([s.token_id for s in steps], dtype=np.int64)
    return Generation(
        text=text, prompt_ids=enc.ids, prompt_tokens=list(enc.display), ids=new_ids,
        tokens=[s.token for s in steps], steps=steps, prompt_attentions=prompt_attentions,
        cache_width=tuple(model.cache_width(i) for i in range(model.n_layers)),
        stop_reason=reason, greedy=greedy, temperature=temperature,
        seed=None if seed is None else int(seed), completion=model.tokenizer.decode(new_ids),
    )  # fmt: skip


def _run(
    model: PretrainedModel, prompt: np.ndarray, max_new_tokens: int, temperature: float,
    rng: np.random.Generator | None, on_step: Callable[[GenerationStep], Any] | None,
) -> tuple[list[GenerationStep], list[np.ndarray], str]:  # fmt: skip
    """The steps (greedy without ``rng``), the prompt's attentions, and why it stopped."""
    stop = stop_token_ids(model)
    caches = [LayerCache() for _ in range(model.n_layers)]
    widths = tuple(model.cache_width(i) for i in range(model.n_layers))
    ids, positions = prompt, np.arange(prompt.size)
    steps: list[GenerationStep] = []
    prompt_attentions: list[np.ndarray] = []
    reason = "max_new_tokens"
    for t in range(max_new_tokens):
        _progress(model, t / max_new_tokens, f"token {t + 1}/{max_new_tokens}")
        h, weights, keys = _forward(model, ids, positions, caches)
        if t == 0:
            prompt_attentions = weights
        logits = model.logits(model.final_norm(h))[0]  # (vocab,)
        probs = softmax(logits, temperature=temperature)  # (vocab,)
        token = int(np.argmax(logits)) if rng is None else int(rng.choice(probs.size, p=probs))
        step = _step(model, t, int(positions[-1]), token, float(probs[token]), weights, keys,
                     caches, widths)  # fmt: skip
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if token in stop:
            reason = "end of sequence"
            break
        ids, positions = np.array([token]), np.array([step.position + 1])
    _progress(model, 1.0, "done")
    return steps, prompt_attentions, reason


def _progress(model: PretrainedModel, fraction: float, message: str) -> None:
    if model.progress is not None:
        model.progress(fraction, message)
