"""Fonts of the PNG and PDF exports: DejaVu Sans, then installed fonts for what it lacks.

DejaVu Sans, matplotlib's own font, has no Chinese, Japanese or Korean glyphs: drawn with it
alone, such tokens become empty boxes.  matplotlib falls back along a list of families glyph
by glyph, so :func:`fonts_for` finds installed fonts (:data:`FALLBACK_FAMILIES`) that have the
characters a diagram uses, and the texts that need them are drawn with ``["DejaVu Sans",
fallback, ...]``.  When no installed font has some characters, :func:`warn_missing` says so
once, naming what to install, and :func:`quiet_matplotlib` silences matplotlib's warning per
missing glyph.

Fonts installed after matplotlib built its font cache are found too: the first diagram that
needs a fallback registers the system's fonts that matplotlib does not know yet.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from unicodedata import category

__all__ = ["FALLBACK_FAMILIES", "INSTALL_HINT", "Fonts", "fonts_for", "quiet_matplotlib",
           "warn_missing"]

BASE_FAMILY = "DejaVu Sans"
#: Fonts with Chinese, Japanese and Korean glyphs, in order of preference (the Noto / Source
#: Han families first, then common Linux, macOS and Windows fonts).
FALLBACK_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Source Han Sans JP", "Source Han Sans SC", "Source Han Sans TC", "Source Han Sans KR",
    "Noto Sans JP", "Noto Sans SC", "Noto Sans TC", "Noto Sans KR",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "IPAexGothic",
    "IPAGothic", "TakaoPGothic", "VL PGothic", "NanumGothic", "UnDotum", "AR PL UMing CN",
    "Hiragino Sans", "Hiragino Sans GB", "PingFang SC", "Apple SD Gothic Neo",
    "Arial Unicode MS", "Yu Gothic", "Meiryo", "MS Gothic", "Microsoft YaHei",
    "Microsoft JhengHei", "SimHei", "Malgun Gothic",
)
INSTALL_HINT = (
    "for Chinese, Japanese or Korean text install a CJK font, e.g. Noto Sans CJK "
    "(Debian, Ubuntu: apt-get install fonts-noto-cjk; Fedora: dnf install "
    "google-noto-sans-cjk-fonts), then restart Python"
)


@dataclass(frozen=True)
class Fonts:
    """The fonts of one diagram.

    Attributes
    ----------
    fallbacks : tuple of str
        Families drawn after DejaVu Sans, for the characters it lacks.
    postscript : bool
        One of them has PostScript (CFF) outlines, which matplotlib can embed in a PDF only
        as Type 3 glyph drawings (its TrueType embedding would write a broken file).
    missing : str
        Characters no installed font has, each once.
    """

    fallbacks: tuple[str, ...] = ()
    postscript: bool = False
    missing: str = ""

    def family(self, text: str) -> str | list[str]:
        """The family (list) to draw ``text`` with: DejaVu Sans alone when it suffices."""
        if self.fallbacks and any(ord(c) not in _base_codepoints() for c in text):
            return [BASE_FAMILY, *self.fallbacks]
        return BASE_FAMILY


@dataclass(frozen=True)
class _Font:
    family: str
    path: str
    index: int  # face in a font collection (.ttc)
    postscript: bool  # CFF outlines, not TrueType


@cache
def _base_codepoints() -> frozenset[int]:
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager

    with TTFont(font_manager.findfont(BASE_FAMILY), lazy=True) as font:
        return frozenset(font.getBestCmap())


@cache
def _codepoints(path: str, index: int) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=index, lazy=True) as font:
        return frozenset(font.getBestCmap())


@cache
def _register_system_fonts() -> None:
    """Make the fonts installed after matplotlib built its font cache known to it."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = {entry.fname for entry in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            with contextlib.suppress(Exception):  # a file FreeType cannot read is no font
                manager.addfont(path)


@cache
def _installed(families: tuple[str, ...]) -> tuple[_Font, ...]:
    """The installed fonts of ``families``, one face each (the regular weight if there is one)."""
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager

    _register_system_fonts()
    best: dict[str, Any] = {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name in families:
            old = best.get(entry.name)
            if old is None or abs(_weight(entry.weight) - 400) < abs(_weight(old.weight) - 400):
                best[entry.name] = entry
    fonts = []
    for name in families:
        if name in best:
            entry = best[name]
            index = int(getattr(entry, "index", 0))  # (matplotlib >= 3.10 reads .ttc faces)
            with TTFont(entry.fname, fontNumber=index, lazy=True) as font:
                fonts.append(_Font(name, entry.fname, index, "glyf" not in font))
    return tuple(fonts)


def _weight(weight: int | str) -> int:
    return weight if isinstance(weight, int) else 700 if "bold" in str(weight) else 400


def fonts_for(texts: Iterable[str], *, truetype_first: bool = False) -> Fonts:
    """The fallback fonts for ``texts``: the first installed ones that have their characters.

    Parameters
    ----------
    texts : iterable of str
        Every text of the diagram.
    truetype_first : bool
        Prefer fonts with TrueType outlines (a PDF then keeps its text as TrueType).
    """
    base = _base_codepoints()
    needed = dict.fromkeys(c for t in texts for c in t  # (control and format characters draw
                           if category(c)[0] != "C" and ord(c) not in base)  # nothing)
    if not needed:
        return Fonts()
    fonts = _installed(tuple(FALLBACK_FAMILIES))
    if truetype_first:
        fonts = tuple(sorted(fonts, key=lambda f: f.postscript))
    chosen: list[_Font] = []
    for font in fonts:
        have = _codepoints(font.path, font.index)
        if any(ord(c) in have for c in needed):
            chosen.append(font)
            needed = {c: None for c in needed if ord(c) not in have}
        if not needed:
            break
    return Fonts(tuple(f.family for f in chosen), any(f.postscript for f in chosen),
                 "".join(needed))


def warn_missing(missing: str) -> None:
    """Warn once that no installed font has the characters ``missing``, and what to do."""
    shown = missing if len(missing) <= 12 else missing[:12] + "…"
    warnings.warn(
        f"no installed font has glyphs for {shown!r}: PNG and PDF export draw them as empty "
        f"boxes (SVG and HTML leave the font to the browser); {INSTALL_HINT}",
        UserWarning,
        stacklevel=_outside_package(),
    )


def _outside_package() -> int:
    """The ``stacklevel`` of the first caller outside attention_widget (the user's line)."""
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            "attention_widget."):
        level, frame = level + 1, frame.f_back
    return level


class _DropWeightNotes(logging.Filter):
    """matplotlib's note that a fallback font lacks the bold (or regular) weight."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont: Failed to find font weight")


@contextlib.contextmanager
def quiet_matplotlib() -> Iterator[None]:
    """Silence matplotlib's per-glyph and per-weight font notes (said once, or harmless)."""
    logger = logging.getLogger("matplotlib.font_manager")
    note = _DropWeightNotes()
    logger.addFilter(note)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            yield
    finally:
        logger.removeFilter(note)
