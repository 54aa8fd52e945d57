"""The command line: ``python -m attention_widget figure MODEL "text" -o fig.svg``.

``figure`` draws the attention of one layer of a pretrained model (a checkpoint folder or a
Hugging Face hub id, see :func:`attention_widget.load_pretrained`) on a text, with the
widget's own exports (:func:`attention_widget.export.save_figure` for SVG, PNG and PDF,
:func:`attention_widget.export.to_html` for a standalone HTML page).

Exit status: 0 when the file is written, 2 for a bad argument (unknown option, layer or head
out of range, unknown stage, ...), 1 when something the command needs is missing (an
optional package, a file, the network).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._checks import output_path

__all__ = ["main"]

_SUFFIXES = (".svg", ".png", ".pdf", ".html", ".htm")
_NEEDS_MATPLOTLIB = (".png", ".pdf")


class _Failure(Exception):
    """A message for the user and the exit status that goes with it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .export import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m attention_widget",
        description="See multi-head self-attention: figures of real models' attention.",
    )
    parser.add_argument("--version", action="version", version=f"attention_widget {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fig = commands.add_parser(
        "figure",
        help="draw one layer's attention on a text to an SVG, PNG, PDF or HTML file",
        description=(
            "Draw the attention of one layer of a pretrained model on a text. The model runs "
            "in NumPy (no torch); PNG and PDF need matplotlib (pip install "
            "attention-widget[export]), hub ids need huggingface_hub (pip install "
            "attention-widget[hub])."
        ),
        epilog=f"stages: {', '.join(STAGES)}. Exit status: 0 written, 2 bad argument, 1 "
        "something missing (a package, a file, the network).",
    )
    fig.add_argument("model", metavar="FOLDER_OR_ID",
                     help="checkpoint folder, or Hugging Face hub id such as Qwen/Qwen3-0.6B")
    fig.add_argument("text", help="the text to run the model on")
    fig.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                     help="file to write; its suffix chooses the format: "
                     + ", ".join(_SUFFIXES))
    fig.add_argument("--layer", type=int, default=0, help="layer, from 0 (default 0)")
    fig.add_argument("--head", type=int, action="append", metavar="H",
                     help="head to draw, from 0; repeat for several (default: every head)")
    fig.add_argument("--stages", metavar="NAMES",
                     help="comma-separated stages to draw (default: all; see below)")
    fig.add_argument("--temperature", type=float, default=1.0,
                     help="softmax temperature of that layer, a what-if (default 1: the model)")
    fig.add_argument("--title", help="figure title (default: the model, layer and heads)")
    fig.add_argument("--dpi", type=float, default=150, help="PNG resolution (default 150)")
    return parser  # fmt: skip


def _check_arguments(args: argparse.Namespace) -> list[str] | None:
    """What can be checked before the model is read; the stages as a list."""
    from .export import STAGES

    suffix = args.output.suffix.lower()
    if suffix not in _SUFFIXES:
        raise _Failure(f"-o {args.output}: the suffix must be one of {', '.join(_SUFFIXES)}", 2)
    try:
        output_path(args.output, "the figure")
    except FileNotFoundError as err:
        raise _Failure(f"-o {args.output}: {err}", 2) from None
    if not args.text.strip():
        raise _Failure("the text is empty: give the text to run the model on", 2)
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise _Failure(f"--temperature must be a finite number > 0, got {args.temperature}", 2)
    if args.layer < 0:
        raise _Failure(f"--layer must be 0 or more, got {args.layer}", 2)
    if any(h < 0 for h in args.head or ()):
        raise _Failure(f"--head must be 0 or more, got {min(args.head)}", 2)
    stages = None
    if args.stages is not None:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise _Failure(f"--stages: unknown stage {unknown[0] if unknown else '(none)'!r}; "
                           f"the stages are {', '.join(STAGES)}", 2)  # fmt: skip
    if suffix in _NEEDS_MATPLOTLIB:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            message = (f"writing {suffix[1:].upper()} needs matplotlib: pip install "
                       "attention-widget[export] (or write .svg or .html)")  # fmt: skip
            raise _Failure(message, 1) from None
    return stages


def _model(name: str) -> Any:
    from .pretrained import load_pretrained

    try:
        return load_pretrained(name)
    except (ImportError, FileNotFoundError, ConnectionError) as err:
        raise _Failure(str(err), 1) from None
    except (ValueError, TypeError) as err:
        raise _Failure(str(err), 2) from None


def figure(args: argparse.Namespace) -> Path:
    """Run the ``figure`` command: read the model, trace the layer, write the file."""
    from .export import save_figure, to_html

    stages = _check_arguments(args)
    model = _model(args.model)
    if args.layer >= model.n_layers:
        raise _Failure(f"--layer {args.layer}: {model.name} has {model.n_layers} layers "
                       f"(0..{model.n_layers - 1})", 2)  # fmt: skip
    bad = [h for h in args.head or () if h >= model.n_heads]
    if bad:
        raise _Failure(f"--head {bad[0]}: {model.name} has {model.n_heads} heads "
                       f"(0..{model.n_heads - 1})", 2)  # fmt: skip
    try:
        trace = model.trace(args.text, args.layer, temperature=args.temperature)
    except (ValueError, TypeError) as err:
        raise _Failure(str(err), 2) from None
    tokens = model.tokenize(args.text)
    extra = trace.weights.shape[-1] - len(tokens)  # keys that are not tokens (DeepSeek V4)
    if extra > 0:
        raise _Failure(f"--layer {args.layer}: layer {args.layer} of {model.name} "
                       f"({model.layer_kind(args.layer)}) attends {extra} compressed entries "
                       f"besides the {len(tokens)} tokens, and figures have one key per "
                       "token: choose a layer whose keys are the tokens", 2)  # fmt: skip
    heads = sorted(set(args.head)) if args.head else None
    title = args.title
    if title is None:
        which = "every head" if heads is None else "head " + ", ".join(map(str, heads))
        title = f"{model.name} · layer {args.layer} · {which}"
        if args.temperature != 1.0:
            title += f" · temperature {args.temperature:g}"
    options = {"stages": stages, "heads": heads, "title": title}
    if args.output.suffix.lower() in (".html", ".htm"):
        settings = {"model": model.name, "layer": args.layer, "temperature": args.temperature,
                    "text": args.text}  # fmt: skip
        return to_html(trace, args.output, tokens, settings=settings, **options)
    return save_figure(trace, args.output, tokens, dpi=args.dpi, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits with status 2 on unknown options, with usage
    try:
        path = figure(args)
    except _Failure as failure:
        print(f"{parser.prog} {args.command}: error: {failure}", file=sys.stderr)
        return failure.status
    except OSError as err:  # the output cannot be written
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
