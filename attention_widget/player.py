"""The generation player: a causal model's generated tokens, step by step, with its cache.

:meth:`~attention_widget.pretrained.PretrainedModel.generate` records, for every generated
token, the attention row of the token it read against the key/value cache of every layer
(:class:`~attention_widget.pretrained.generation.GenerationStep`).  The player shows one step at
a time, for the layer and head the widget has chosen:

* the text so far, the token read and the token chosen;
* the new query's row of every head of the layer against the cached keys (keys not in the
  cache, later ones or ones a sliding window dropped, are grey);
* the chosen head's rows of every step so far: the cache growing one key per step;
* the cache's size per layer, in entries, numbers and bytes, against what multi-head attention
  (a key and a value of every head for every token) would hold, so that grouped-query and
  latent attention's savings show.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .controls import readout
from .plots import Panel, PanelFigure, shown_together

__all__ = ["GenerationHooks", "GenerationPlayer", "cache_rows", "step_rows"]

DEFAULT_NEW_TOKENS = 12
PLAY_INTERVAL_MS = 900
#: A token of the text so far: a box, so that tokens without spaces stay apart.
TOKEN_STYLE = ("display:inline-block;margin:1px;padding:0 4px;border:1px solid #8888;"
               "border-radius:3px;white-space:pre;")
CELL = "style='padding:1px 10px;text-align:right'"


def step_rows(generation: Any, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Every step's query row of ``layer``, placed at its keys' positions.

    Parameters
    ----------
    generation : Generation
        What :func:`~attention_widget.pretrained.generation.generate` returned.
    layer : int

    Returns
    -------
    weights : ndarray of float32, shape (n_steps, n_heads, n_positions)
        ``weights[t, h, p]``: the weight head ``h``'s query at step ``t`` puts on the key at
        position ``p``; 0 where there is no such key.
    cached : ndarray of bool, shape (n_steps, n_positions)
        Whether step ``t`` had a key at position ``p`` in its cache (or its own).
    ``n_positions`` is the position read at the last step plus one.
    """
    steps = generation.steps
    n_pos = steps[-1].position + 1
    n_heads = steps[0].attentions[layer].shape[0]
    weights = np.zeros((len(steps), n_heads, n_pos), dtype=np.float32)
    cached = np.zeros((len(steps), n_pos), dtype=bool)
    for t, step in enumerate(steps):
        keys = step.key_positions[layer]  # (n_keys,) positions of this step's keys
        weights[t][:, keys] = step.attentions[layer][:, 0, :]  # (n_heads, n_keys)
        cached[t, keys] = True
    return weights, cached


def cache_rows(generation: Any, t: int, mha_width: int) -> list[dict[str, int]]:
    """The cache of every layer after step ``t``, and what multi-head attention would hold.

    Parameters
    ----------
    generation : Generation
    t : int
        The step.
    mha_width : int
        Numbers per token of a multi-head cache: ``n_heads * (d_key + d_value)``.

    Returns
    -------
    list of dict, one per layer
        ``entries``, ``numbers``, ``bytes`` (from the step), ``width`` (numbers per entry)
        and ``mha_numbers``: ``entries * mha_width``.
    """
    step = generation.steps[t]
    return [{"entries": e, "numbers": n, "bytes": b, "width": w, "mha_numbers": e * mha_width}
            for e, n, b, w in zip(step.cache_entries, step.cache_numbers, step.cache_bytes,
                                  generation.cache_width, strict=True)]


def _size(n_bytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


class GenerationPlayer:
    """The generate control and the player over a :class:`Generation`.

    Parameters
    ----------
    on_generate : callable(max_new_tokens)
        Called by the generate button.

    Attributes
    ----------
    box : ipywidgets.VBox
        What the widget shows (CSS class ``aw-generation``).
    figs : dict of str to PanelFigure
        ``row`` (this step, every head of the layer) and ``steps`` (the head, every step).
    """

    def __init__(self, on_generate: Callable[[int], None]) -> None:
        self._on_generate = on_generate
        self.max_new = W.BoundedIntText(value=DEFAULT_NEW_TOKENS, min=1, max=512,
                                        description="new tokens", layout={"width": "170px"},
                                        _dom_classes=("aw-max-new",))
        self.button = W.Button(description="generate", icon="play-circle",
                               _dom_classes=("aw-generate",))
        self.button.on_click(lambda _b: self._on_generate(int(self.max_new.value)))
        self.step = W.IntSlider(value=0, min=0, max=0, description="step",
                                layout={"width": "360px"}, _dom_classes=("aw-gen-step",))
        self.play = W.Play(value=0, min=0, max=0, interval=PLAY_INTERVAL_MS,
                           description="play the steps", _dom_classes=("aw-gen-play",))
        # linked in the kernel: a step set before the widget is shown holds (a link in the
        # browser copies the Play's value onto the slider when it first draws)
        W.link((self.play, "value"), (self.step, "value"))
        self.figs = {
            "row": PanelFigure("aw-fig-gen-row", signed=False, cell_px=14, max_height=360,
                               min_height=150),
            "steps": PanelFigure("aw-fig-gen-steps", signed=False, cell_px=12, max_height=420,
                                 min_height=150),
        }
        self.intro, self.text, self.cache, self.status = (
            readout(c) for c in ("aw-gen-intro", "aw-gen-text", "aw-gen-cache", "aw-gen-status"))
        self.intro.value = ("<b>Generation</b>: the model continues the text one token at a "
                            "time with a key/value cache; step through the tokens it chose.")
        self._controls = W.HBox([self.max_new, self.button, self.status],
                                layout={"flex_flow": "row wrap"})
        self._player = W.HBox([self.play, self.step], layout={"flex_flow": "row wrap"})
        self.box = W.VBox([self.intro, self._controls], _dom_classes=("aw-generation",))
        self.generation: Any = None
        self._model: tuple[int, int, int] = (1, 1, 1)  # n_heads, d_key, d_value of the model
        self._rows: tuple[int, np.ndarray, np.ndarray] | None = None  # layer, weights, cached

    def set_generation(self, generation: Any, *, n_heads: int, d_key: int, d_value: int) -> None:
        """Play ``generation`` from its first step.

        ``n_heads``, ``d_key`` and ``d_value`` (a head's key and value widths) are the model's:
        a multi-head cache holds ``n_heads * (d_key + d_value)`` numbers per token.
        """
        self.generation = generation
        self._model = (n_heads, d_key, d_value)
        self._rows = None
        last = len(generation.steps) - 1
        self.play.playing = False
        self.step.max = self.play.max = last
        self.step.value = self.play.value = 0
        self.box.children = (self.intro, self._controls, self._player, self.text,
                             self.figs["row"].figure, self.figs["steps"].figure, self.cache)

    def show_error(self, message: str) -> None:
        """Say why generation could not run ('' clears it)."""
        self.status.value = (f"<span style='color:#c62828'>⚠ {html.escape(message)}</span>"
                             if message else "")

    def set_colormap(self, name: str) -> None:
        """Colour the weights with sequential table ``name``."""
        for fig in self.figs.values():
            fig.set_colormap(name)

    # -- drawing -------------------------------------------------------------------------------
    def draw(self, t: int, layer: int, head: int) -> int:
        """Show step ``t`` of layer ``layer``, head ``head`` outlined; return the bytes sent."""
        gen = self.generation
        if gen is None:
            return 0
        t = int(np.clip(t, 0, len(gen.steps) - 1))
        if self._rows is None or self._rows[0] != layer:
            self._rows = (layer, *step_rows(gen, layer))
        _, weights, cached = self._rows
        step = gen.steps[t]
        n_heads, n_pos = weights.shape[1:]
        labels = gen.all_tokens[:n_pos]
        keys = [tok if p <= step.position else "" for p, tok in enumerate(labels)]
        rows_mask = np.broadcast_to(cached[t], (n_heads, n_pos))
        steps_mask = cached & (np.arange(len(gen.steps)) <= t)[:, None]  # later steps: grey
        read = [gen.all_tokens[s.position] for s in gen.steps]
        with shown_together(self.figs.values()):
            sent = self.figs["row"].update([Panel(
                weights[t], self._row_title(layer, t), [f"head {h}" for h in range(n_heads)],
                keys)], mask=rows_mask)
            sent += self.figs["steps"].update([Panel(
                weights[:, head], f"layer {layer}, head {head}: every step's query row (the "
                "cache grows a key a step)",
                [f"{s}: {r}" if s <= t else f"{s}" for s, r in enumerate(read)],  # (no spoiler)
                keys)], mask=steps_mask)
        self.figs["row"].show_highlight([self.figs["row"].row_box(0, head)])
        self.figs["steps"].show_highlight([self.figs["steps"].row_box(0, t)])
        self.text.value = self._text_html(t)
        self.cache.value = self._cache_html(t)
        return sent

    def _row_title(self, layer: int, t: int) -> str:
        gen = self.generation
        step = gen.steps[t]
        return (f"layer {layer}, step {t}: the query of “{gen.all_tokens[step.position]}” "
                f"(position {step.position}) against {step.position + 1} keys")

    def _text_html(self, t: int) -> str:
        """The prompt, the tokens chosen before step ``t``, the token read, the one chosen."""
        gen = self.generation
        step = gen.steps[t]
        n_prompt = len(gen.prompt_tokens)
        spans = []
        for p, tok in enumerate(gen.all_tokens[:n_prompt + t]):
            style = TOKEN_STYLE + ("color:#777;" if p < n_prompt else "")
            if p == step.position:
                style += "border-color:#ff3d8b;border-width:2px;"
            spans.append(f"<span style='{style}'>{html.escape(tok)}</span>")
        chosen = (f"<span style='{TOKEN_STYLE}background:#ffe08a' title='chosen at step {t}'>"
                  f"{html.escape(step.token)}</span>")
        return (f"<div>{''.join(spans)}{chosen}</div>"
                f"<div style='font-size:90%'>step {t} of {len(gen.steps) - 1}: the query of "
                f"token {step.position} (outlined) reads the cache and chooses "
                f"<b>{html.escape(repr(step.token))}</b> (probability {step.probability:.2f}, "
                f"{'greedy' if gen.greedy else 'sampled'}); grey: the prompt</div>")

    def _cache_html(self, t: int) -> str:
        """The cache per layer after step ``t``, and against multi-head attention."""
        gen = self.generation
        n_heads, d_key, d_value = self._model
        rows = cache_rows(gen, t, n_heads * (d_key + d_value))
        body = "".join(
            "<tr>" + "".join(f"<td {CELL}>{v}</td>" for v in (
                i, r["entries"], r["width"], f"{r['numbers']:,}", _size(r["bytes"]),
                f"{r['mha_numbers']:,}")) + "</tr>" for i, r in enumerate(rows))
        head = "".join(f"<th {CELL}>{h}</th>" for h in (
            "layer", "entries", "numbers per entry", "numbers", "bytes",
            "multi-head would hold"))
        total = sum(r["numbers"] for r in rows)
        mha = sum(r["mha_numbers"] for r in rows)
        saving = (f"this model caches {mha / total:.3g}× fewer numbers than multi-head "
                  f"attention would ({n_heads} heads × ({d_key} + {d_value}) per token: a key "
                  "and a value of each head)"
                  if total and total < mha else
                  f"as multi-head attention: a key and a value of each of the {n_heads} heads "
                  "per token")
        return (f"<div style='font-size:90%'><b>key/value cache after step {t}</b>: "
                f"{total:,} numbers, {_size(sum(r['bytes'] for r in rows))} in float32 over "
                f"{len(rows)} layers; {html.escape(saving)}.</div>"
                "<table class='aw-cache-table' style='font-size:85%;line-height:1.35;"
                "border-collapse:collapse'>"
                f"<tr>{head}</tr>{body}</table>")

    # -- what is shown (tests) -----------------------------------------------------------------
    def displayed(self, name: str) -> list[np.ndarray]:
        """The arrays figure ``name`` (``row`` or ``steps``) shows."""
        return self.figs[name].displayed()


class GenerationHooks(T.HasTraits):
    """The widget's side of generation (a part of :class:`~attention_widget.AttentionWidget`).

    For a source that can generate (a causal pretrained model) the widget shows the generate
    control; :meth:`generate` (or the button) continues the text and the player steps through
    the result, for the widget's ``layer`` and ``head``.
    """

    generation_step = T.Int(0, help="The step the generation player shows (after generate).")

    generation: Any = None
    _player: GenerationPlayer | None = None

    def _generation_views(self) -> tuple[W.Widget, ...]:
        """What the layout shows of the player (its generate control, for a causal model)."""
        if self._player is None and self._source.can_generate:
            self._player = GenerationPlayer(self._generate_clicked)
            self._player.set_colormap(self.colormap)
            T.link((self._player.step, "value"), (self, "generation_step"))
        return () if self._player is None else (self._player.box,)

    def generate(self, max_new_tokens: int = DEFAULT_NEW_TOKENS) -> Any:
        """Continue the text greedily and show the player at its first step.

        Parameters
        ----------
        max_new_tokens : int
            Tokens to generate (fewer if the model ends the text first).

        Returns
        -------
        Generation
            See :func:`attention_widget.pretrained.generation.generate`.

        Raises
        ------
        ValueError
            For a model that cannot generate (bidirectional, or no model), a bad count, a
            context longer than the model's positions.
        """
        with self._panel.progress() as report:
            generation = self._source.generate(self._settings(), max_new_tokens, report)
        self.generation = generation
        self._generation_views()
        assert self._player is not None and self.trace is not None
        self._player.show_error("")
        tr = self.trace
        self._player.set_generation(generation, n_heads=tr.n_heads, d_key=tr.k.shape[-1],
                                    d_value=tr.v.shape[-1])
        self.generation_step = 0
        self._draw_generation()
        return generation

    def _generate_clicked(self, max_new_tokens: int) -> None:
        assert self._player is not None
        try:
            self.generate(max_new_tokens)
        except (ValueError, TypeError) as err:
            self._player.show_error(str(err))

    @T.observe("colormap")
    def _player_colormap(self, change: dict) -> None:
        if self._player is not None:
            self._player.set_colormap(change["new"])

    @T.validate("generation_step")
    def _valid_generation_step(self, proposal: dict) -> int:
        last = 0 if self.generation is None else len(self.generation.steps) - 1
        return int(np.clip(proposal["value"], 0, last))

    @T.observe("generation_step")
    def _on_generation_step(self, change: dict) -> None:
        self._draw_generation()

    def _draw_generation(self) -> int:
        """Show the player's step for the widget's layer and head."""
        if self._player is None or self.generation is None:
            return 0
        return self._player.draw(self.generation_step, self.layer, self.head)
