"""What a widget sends to the browser, measured without a browser or kernel."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
import ipywidgets as W
from comm.base_comm import BaseComm

__all__ = ["CommRecorder", "by_class", "from_browser", "record_comm_messages"]


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


def by_class(root: W.Widget, css_class: str) -> list[W.Widget]:
    """The widgets inside ``root`` (itself included) that carry ``css_class``, as the page has
    them: the children of boxes, depth first (what is not a child is not on the page)."""
    found = [root] if css_class in getattr(root, "_dom_classes", ()) else []
    for child in getattr(root, "children", ()):
        found += by_class(child, css_class)
    return found


def from_browser(widget: W.Widget, content: dict) -> None:
    """Deliver a custom message to ``widget`` as its front end would (e.g. a bqplot hover)."""
    widget._handle_custom_msg(content, [])
