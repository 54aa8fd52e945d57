"""The one PNG encoder of the package (zlib and struct only, no image library).

Two kinds of image, both 8 bits per channel, no interlace, filter byte 0 on every row:

* :func:`palette_png`: one byte per pixel, an index into a palette of up to 256 colours with
  optional transparent entries -- what the widget's figures send (one pixel per cell, a colour
  level each; see :mod:`attention_widget.colors`);
* :func:`rgb_png`: three bytes per pixel, deflated at zlib's default level -- what the static
  exports embed (files, where size matters more than encoding time).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["PNG_SIGNATURE", "palette_png", "rgb_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RLE_MAX_BYTES = 1 << 18  # pixel data up to this size is packed; larger data is stored


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png(width: int, height: int, color_type: int, rows: np.ndarray, extra: bytes = b"",
         level: int | None = None) -> bytes:
    """A PNG of ``rows`` (height, 1 + bytes per row): a 0 filter byte, then the row's bytes.

    With a zlib ``level``, deflated at that level.  Else small images are deflated with
    ``Z_RLE`` (runs of equal bytes: palette heatmaps are made of them) and large ones are
    stored, since packing them costs more time than sending them.
    """
    raw = rows.tobytes()
    if level is not None:
        idat = zlib.compress(raw, level)
    elif len(raw) <= _RLE_MAX_BYTES:
        packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
        idat = packer.compress(raw) + packer.flush()
    else:
        idat = zlib.compress(raw, 0)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def palette_png(indices: np.ndarray, colors: np.ndarray, transparent: tuple[int, ...] = ()
                ) -> bytes:
    """An 8-bit palette PNG.

    Parameters
    ----------
    indices : ndarray of uint8, shape (height, width)
        Palette index of each pixel.
    colors : ndarray of uint8, shape (n_colors, 3), n_colors <= 256
        The palette.
    transparent : tuple of int
        Palette indices drawn fully transparent.
    """
    height, width = indices.shape
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.ndim != 2 or colors.shape[1] != 3 or not 0 < len(colors) <= 256:
        raise ValueError(f"colors must have shape (n <= 256, 3), got {colors.shape}")
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 (none) per row
    rows[:, 1:] = indices
    alpha = np.full(len(colors), 255, dtype=np.uint8)
    alpha[list(transparent)] = 0
    extra = _chunk(b"PLTE", colors.tobytes()) + (
        _chunk(b"tRNS", alpha.tobytes()) if transparent else b"")
    return _png(width, height, 3, rows, extra)


def rgb_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an ``(height, width, 3)`` uint8 image."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must have shape (height, width, 3), got {rgb.shape}")
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 1:] = rgb.reshape(height, 3 * width)
    return _png(width, height, 2, rows, level=6)
