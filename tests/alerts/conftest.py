"""A real local webhook receiver and a real local SMTP server for the alert tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from keepa_deals.redis_server import free_port


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers POSTs with `status` (200 by default) and keeps every one it got."""

    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def webhook():
    receiver = WebhookReceiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            receiver.requests.append(Received(self.path, dict(self.headers),
                                              self.rfile.read(length)))
            self.send_response(receiver.status)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/T0SECRET/B0SECRET"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield receiver
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    """(host, port, inbox): an SMTP server on 127.0.0.1 that keeps every message."""
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield "127.0.0.1", controller.port, inbox
    controller.stop()
