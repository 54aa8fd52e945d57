"""Helpers for measuring what a widget sends to the browser, without a browser or kernel."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
import numpy as np
from comm.base_comm import BaseComm

__all__ = ["CommRecorder", "decode_palette_png", "image_widget_png", "record_comm_messages"]


@dataclass
class CommRecorder:
    """Messages published by every comm created while recording.

    Attributes
    ----------
    messages : list of (msg_type, data, buffers)
        ``data`` is the JSON part; ``buffers`` the binary buffers (bytes) sent with it.
    sent : list of (comm_id, data)
        The same messages in the same order, with the comm (the widget) each went to.
    """

    messages: list[tuple[str, dict, list[bytes]]] = field(default_factory=list)
    sent: list[tuple[str, dict]] = field(default_factory=list)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.messages.clear()
        self.sent.clear()

    @property
    def buffer_bytes(self) -> int:
        """Bytes in binary buffers (the arrays)."""
        return sum(len(b) for _, _, bufs in self.messages for b in bufs)

    @property
    def json_bytes(self) -> int:
        """Bytes of the JSON parts, as they would be serialized."""
        return sum(len(json.dumps(d, default=str)) for _, d, _ in self.messages)

    @property
    def total_bytes(self) -> int:
        """Everything sent: JSON plus buffers."""
        return self.buffer_bytes + self.json_bytes


class _RecordingComm(BaseComm):
    recorder: CommRecorder

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        bufs = [bytes(memoryview(b)) for b in (buffers or [])]
        self.recorder.messages.append((msg_type, data or {}, bufs))
        self.recorder.sent.append((self.comm_id, data or {}))


@contextlib.contextmanager
def record_comm_messages() -> Iterator[CommRecorder]:
    """Record the messages of widgets created inside the ``with`` block.

    Replaces ``comm.create_comm`` (the hook ipywidgets uses) for the duration of the block.
    """
    recorder = CommRecorder()
    original = comm.create_comm

    recording = type("RecordingComm", (_RecordingComm,), {"recorder": recorder})

    def create(*args: Any, **kwargs: Any) -> BaseComm:
        return recording(*args, **kwargs)

    comm.create_comm = create
    try:
        yield recorder
    finally:
        comm.create_comm = original


def image_widget_png(image: Any) -> bytes:
    """The PNG bytes an ``ipywidgets.Image`` holds.

    Raw (``format="png"``) or as a ``data:image/png;base64,...`` URL (``format="url"``, how
    the figures send them).
    """
    from .plots import PNG_URL_PREFIX  # (here: importing testing loads no bqplot)

    value = bytes(image.value)
    if image.format == "png":
        return value
    if image.format != "url" or not value.startswith(PNG_URL_PREFIX):
        raise ValueError(f"not a PNG image widget: format {image.format!r}, {value[:30]!r}")
    return base64.b64decode(value[len(PNG_URL_PREFIX):], validate=True)


def decode_palette_png(png: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an 8-bit palette PNG as :func:`attention_widget.plots.panels_png` writes them.

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
