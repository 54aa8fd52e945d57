"""attention_widget.server: TCP_NODELAY on kernel websockets (server extension + Voila class).

The latency effect is measured by ``benchmarks/browser.py`` (with and without
``--plain-server``); the browser tests run JupyterLab with the extension and Voila with the
documented opt-in (``server.VOILA_OPTION``).  Here: the wiring, with the real jupyter_server
classes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from jupyter_server.services.kernels.connection.base import BaseKernelWebsocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

import attention_widget
from attention_widget import server

REPO = Path(__file__).resolve().parents[1]


class FakeStream:
    """Records what the handler asks of its socket."""

    def __init__(self) -> None:
        self.nodelay: list[bool] = []


class FakeHandler:
    """The part of tornado's WebSocketHandler that the mixin uses."""

    def __init__(self, open_: bool = True) -> None:
        self.stream = FakeStream()
        self.ws_connection = object() if open_ else None

    def set_nodelay(self, value: bool) -> None:
        assert self.ws_connection is not None, "tornado asserts an open websocket here"
        self.stream.nodelay.append(value)


class RecordingConnection(BaseKernelWebsocketConnection):
    """A custom connection class (as a gateway or another extension might configure)."""

    connected: list[bool]

    def connect(self):
        self.connected = [True]
        return "connected"


def connect_through_nodelay(handler: FakeHandler):
    """``connect()`` of ``with_nodelay(RecordingConnection)`` over ``handler``; (result, conn)."""
    cls = server.with_nodelay(RecordingConnection)
    conn = cls.__new__(cls)  # no kernel behind it: only connect() is exercised
    conn.__dict__["websocket_handler"] = handler
    # bypass traitlets' Instance check of websocket_handler: the fake is not a tornado handler
    cls.websocket_handler = property(lambda self: self.__dict__["websocket_handler"])
    try:
        return conn.connect(), conn
    finally:
        del cls.websocket_handler


def test_connect_sets_nodelay_then_runs_the_base_connect() -> None:
    handler = FakeHandler()
    result, conn = connect_through_nodelay(handler)
    assert result == "connected" and conn.connected == [True]
    assert handler.stream.nodelay == [True]
    assert isinstance(conn, RecordingConnection) and isinstance(conn, server.NoDelayMixin)


def test_connect_on_a_closed_websocket_does_not_touch_the_socket() -> None:
    handler = FakeHandler(open_=False)
    result, _ = connect_through_nodelay(handler)
    assert result == "connected"
    assert handler.stream.nodelay == []


def test_with_nodelay_wraps_each_class_once() -> None:
    assert server.with_nodelay(ZMQChannelsWebsocketConnection) is server.NoDelayKernelConnection
    assert server.with_nodelay(server.NoDelayKernelConnection) is server.NoDelayKernelConnection
    wrapped = server.with_nodelay(RecordingConnection)
    assert server.with_nodelay(RecordingConnection) is wrapped  # loading twice: one class
    assert wrapped.__name__ == "NoDelayRecordingConnection"
    assert server.with_nodelay(wrapped) is wrapped
    # the mixin comes first, so its connect() runs before the wrapped class's
    assert wrapped.__mro__[1] is server.NoDelayMixin


def fake_serverapp(connection_class: object) -> SimpleNamespace:
    logger = logging.getLogger("test_server.fake_serverapp")
    return SimpleNamespace(
        web_app=SimpleNamespace(settings={"kernel_websocket_connection_class": connection_class}),
        kernel_websocket_connection_class=connection_class,
        log=logger,
    )


def test_extension_puts_nodelay_into_the_configured_class(caplog) -> None:
    app = fake_serverapp(ZMQChannelsWebsocketConnection)
    with caplog.at_level(logging.INFO, logger="test_server.fake_serverapp"):
        server._load_jupyter_server_extension(app)
    assert app.web_app.settings["kernel_websocket_connection_class"] is (
        server.NoDelayKernelConnection
    )
    assert app.kernel_websocket_connection_class is server.NoDelayKernelConnection
    assert "TCP_NODELAY on kernel websockets" in caplog.text
    assert "jupyter server extension disable attention_widget" in caplog.text

    custom = fake_serverapp(RecordingConnection)  # e.g. a gateway's class: kept, wrapped
    server._load_jupyter_server_extension(custom)
    got = custom.web_app.settings["kernel_websocket_connection_class"]
    assert issubclass(got, RecordingConnection) and issubclass(got, server.NoDelayMixin)


def test_extension_leaves_an_unknown_setting_alone(caplog) -> None:
    app = fake_serverapp("not a class")
    with caplog.at_level(logging.WARNING, logger="test_server.fake_serverapp"):
        server._load_jupyter_server_extension(app)
    assert app.web_app.settings["kernel_websocket_connection_class"] == "not a class"
    assert "TCP_NODELAY not set" in caplog.text


def test_extension_point_names_the_server_module() -> None:
    points = attention_widget._jupyter_server_extension_points()
    assert points == [{"module": "attention_widget.server"}]


def test_install_enables_the_extension() -> None:
    """The config file the wheel installs makes jupyter_server load and validate it."""
    shipped = REPO / "jupyter-config" / "jupyter_server_config.d" / "attention_widget.json"
    assert json.loads(shipped.read_text())["ServerApp"]["jpserver_extensions"] == {
        "attention_widget": True
    }
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    text = out.stdout + out.stderr
    lines = [line for line in text.splitlines() if "attention_widget" in line]
    assert any("enabled" in line for line in lines), text
    assert any("OK" in line for line in lines), text


def test_the_package_claims_no_voila_config_file() -> None:
    """voila.json belongs to the user: the wheel installs only its own, package-named file."""
    text = (REPO / "pyproject.toml").read_text()
    shared = text[text.index("[tool.hatch.build.targets.wheel.shared-data]"):]
    shared = shared[: shared.index("\n[", 1)]
    targets = [line.split("=")[1].strip().strip('"') for line in shared.splitlines()[1:]
               if "=" in line]
    assert targets == ["etc/jupyter/jupyter_server_config.d/attention_widget.json"], targets


def test_voila_option_gives_voila_the_nodelay_class() -> None:
    """The opt-in docs/network.md gives, parsed the way Voila parses its command line."""
    from voila.app import Voila

    app = Voila()
    app.parse_command_line([server.VOILA_OPTION])
    assert app.kernel_websocket_connection_class is server.NoDelayKernelConnection
    doc = (REPO / "docs" / "network.md").read_text()
    assert server.VOILA_OPTION.split("=", 1)[1] in doc
