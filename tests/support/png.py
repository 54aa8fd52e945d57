"""Reading back the PNGs the figures send (an independent decoder)."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from attention_widget.plots import PNG_URL_PREFIX

__all__ = ["decode_palette_png", "image_widget_png"]


def image_widget_png(image: Any) -> bytes:
    """The PNG bytes an ``ipywidgets.Image`` holds.

    Raw (``format="png"``) or as a ``data:image/png;base64,...`` URL (``format="url"``, how
    the figures send them).
    """
    value = bytes(image.value)
    if image.format == "png":
        return value
    if image.format != "url" or not value.startswith(PNG_URL_PREFIX):
        raise ValueError(f"not a PNG image widget: format {image.format!r}, {value[:30]!r}")
    return base64.b64decode(value[len(PNG_URL_PREFIX):], validate=True)


def decode_palette_png(png: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an 8-bit palette PNG as :func:`attention_widget.png.palette_png` writes them.

    An independent reader (chunks, CRCs, zlib, filter type 0), so tests can check the bytes
    the browser gets, not only the arrays the figure was given.

    Returns
    -------
    indices : ndarray of uint8, shape (height, width)
    palette : ndarray of uint8, shape (n_colors, 3)
    alpha : ndarray of uint8, shape (n_colors,)
        From the ``tRNS`` chunk (255 where it gives none).
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    chunks: dict[bytes, bytes] = {}
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + data) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        chunks[kind] = chunks.get(kind, b"") + data
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    if (depth, color_type) != (8, 3):
        raise ValueError(f"expected an 8-bit palette PNG, got depth {depth}, type {color_type}")
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, width + 1)
    if raw[:, 0].any():
        raise ValueError("expected filter type 0 on every row")
    palette = np.frombuffer(chunks[b"PLTE"], np.uint8).reshape(-1, 3)
    alpha = np.full(len(palette), 255, dtype=np.uint8)
    trns = np.frombuffer(chunks.get(b"tRNS", b""), np.uint8)
    alpha[: len(trns)] = trns
    return raw[:, 1:].copy(), palette, alpha
