"""A real HTTP server on loopback (or the sandbox's gateway), on its own thread: it answers every request
from a queue, then with its standing answer, and records what it got. It stands in for a site behind
nginx, an app that fails, and a Slack-compatible webhook.

Example:
    with LoopbackServer(answer=(200, b"ok")) as hook:
        post(hook.url + "/hook", ...)
    assert hook.posted() == [{"text": "hi"}]
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time


class LoopbackServer:
    """host: the address to listen on ("0.0.0.0" for the sandbox's VPSes); tls: an SSLContext for HTTPS
    (the server names clients ask for are recorded in `names`). `answer` (status, body) may be changed
    while it runs; `queue` holds answers given once each, first."""

    def __init__(self, answer: tuple[int, bytes] = (200, b"ok"), host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None):
        self.answer = answer
        self.queue: list[tuple[int, bytes]] = []
        self.seen: list[dict] = []
        self.times: list[float] = []  # when each of `seen` arrived
        self.names: list[str] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer((host, 0), self._handler())
        self.scheme = "https" if tls else "http"
        if tls:
            tls.sni_callback = lambda sock, name, context: self.names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def posted(self) -> list[dict]:
        """The JSON bodies of every POST so far, in order."""
        with self.lock:
            return [entry["json"] for entry in self.seen if "json" in entry]

    def received(self, path_prefix: str = "") -> list[tuple[float, dict]]:
        """(when, JSON body) of every POST so far (to a path that starts with `path_prefix`)."""
        with self.lock:
            return [(at, entry["json"]) for at, entry in zip(self.times, self.seen)
                    if "json" in entry and entry["path"].startswith(path_prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LoopbackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nginx
            wbufsize = -1  # headers and body in one write: no Nagle delay between them

            def do_GET(self):
                recorder._record({"host": self.headers["Host"], "path": self.path})
                self._reply()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder._record({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
                self._reply()

            def _reply(self):
                with recorder.lock:
                    status, body = recorder.queue.pop(0) if recorder.queue else recorder.answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def _record(self, entry: dict) -> None:
        with self.lock:
            self.seen.append(entry)
            self.times.append(time.time())
