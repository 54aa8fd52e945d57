"""Kernel websockets without Nagle's algorithm: a Jupyter server extension and a Voila setting.

Why
---
Jupyter server and Voila leave Nagle's algorithm on for the websocket between the server and
the browser.  A widget update is a burst of small messages (the slider's echo, each stage's
image, the summary line); with Nagle on, the server holds back every message after the first
until the browser acknowledges it, and browsers delay their acknowledgements (up to ~40 ms on
Linux).  ``benchmarks/browser.py`` measures the effect (``--plain-server``: Voila's own class).
Tornado's documentation recommends ``set_nodelay(True)`` for exactly this case.

What
----
* :class:`NoDelayKernelConnection` -- the server's kernel websocket connection with
  ``TCP_NODELAY`` set on the browser's socket as it connects.  Nothing else changes.
* A Jupyter server extension (enabled on install by
  ``etc/jupyter/jupyter_server_config.d/attention_widget.json``) that puts the same switch into
  whatever connection class the server uses (JupyterLab, Notebook 7, ``jupyter server`` with
  Voila's ``/voila/render/...``).  Turn it off with
  ``jupyter server extension disable attention_widget``.
* Standalone Voila loads no server extensions, and its one configuration file, ``voila.json``,
  belongs to the user, so the package installs none.  Opt in with :data:`VOILA_OPTION` on the
  command line (``voila OPTION notebook.ipynb``) or with the same setting in your own
  ``voila.json`` (``docs/network.md`` gives both in full).

This module imports ``jupyter_server`` only when the server loads it; the package itself never
needs it.
"""

from __future__ import annotations

import functools
from typing import Any

from jupyter_server.services.kernels.connection.base import BaseKernelWebsocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

__all__ = ["VOILA_OPTION", "NoDelayKernelConnection", "NoDelayMixin", "with_nodelay"]

#: The command-line option that gives standalone Voila the connection class of this module.
VOILA_OPTION = (
    "--Voila.kernel_websocket_connection_class=attention_widget.server.NoDelayKernelConnection"
)


def _set_nodelay(handler: Any) -> None:
    """``TCP_NODELAY`` on the websocket of a tornado ``WebSocketHandler``, if it is open."""
    if handler is not None and getattr(handler, "ws_connection", None) is not None:
        handler.set_nodelay(True)


class NoDelayMixin:
    """Sets ``TCP_NODELAY`` on the browser's websocket before the connection starts relaying.

    ``connect()`` runs in the handler's ``open()``, i.e. once the websocket handshake is done
    (tornado switches ``TCP_NODELAY`` off after the handshake's HTTP response).
    """

    websocket_handler: Any
    _announced = False  # one log line per server process

    def connect(self) -> Any:
        """Set ``TCP_NODELAY``, then connect as the base class does."""
        _set_nodelay(self.websocket_handler)
        if not NoDelayMixin._announced:
            NoDelayMixin._announced = True
            log = getattr(self, "log", None)
            if log is not None:
                log.info("attention_widget: TCP_NODELAY on this kernel websocket and the next")
        return super().connect()  # type: ignore[misc]


class NoDelayKernelConnection(NoDelayMixin, ZMQChannelsWebsocketConnection):
    """Jupyter server's default kernel websocket connection, with ``TCP_NODELAY``."""


@functools.cache
def with_nodelay(
    cls: type[BaseKernelWebsocketConnection],
) -> type[BaseKernelWebsocketConnection]:
    """``cls`` with :class:`NoDelayMixin` in front (``cls`` itself if it already has it)."""
    if issubclass(cls, NoDelayMixin):
        return cls
    if cls is ZMQChannelsWebsocketConnection:
        return NoDelayKernelConnection
    return type(f"NoDelay{cls.__name__}", (NoDelayMixin, cls), {"__module__": __name__})


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Give the server's kernel websocket connections ``TCP_NODELAY``."""
    settings = serverapp.web_app.settings
    current = settings.get("kernel_websocket_connection_class") or getattr(
        serverapp, "kernel_websocket_connection_class", ZMQChannelsWebsocketConnection
    )
    if not (isinstance(current, type) and issubclass(current, BaseKernelWebsocketConnection)):
        serverapp.log.warning(
            "attention_widget: kernel websocket connection class %r is not a "
            "BaseKernelWebsocketConnection; TCP_NODELAY not set", current
        )
        return
    settings["kernel_websocket_connection_class"] = with_nodelay(current)
    if hasattr(serverapp, "kernel_websocket_connection_class"):
        serverapp.kernel_websocket_connection_class = settings["kernel_websocket_connection_class"]
    serverapp.log.info(
        "attention_widget: TCP_NODELAY on kernel websockets (widget updates are bursts of "
        "small messages); disable with `jupyter server extension disable attention_widget`"
    )
