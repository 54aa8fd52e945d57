"""Helpers for measuring what a widget sends to the browser, without a browser or kernel."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
from comm.base_comm import BaseComm

__all__ = ["CommRecorder", "record_comm_messages"]


@dataclass
class CommRecorder:
    """Messages published by every comm created while recording.

    Attributes
    ----------
    messages : list of (msg_type, data, buffers)
        ``data`` is the JSON part; ``buffers`` the binary buffers (bytes) sent with it.
    """

    messages: list[tuple[str, dict, list[bytes]]] = field(default_factory=list)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.messages.clear()

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
