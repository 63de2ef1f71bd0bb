"""A local OpenAI-compatible chat server that replays captured answers, for the advisor checks of
schemas.py (the hub runs with advisor.provider = "openai" and this server as its base_url).

POST /v1/chat/completions answers with a captured stream
(tests/fixtures/openai_compat/pai_openai_gpt-4o-mini_stream_text.sse, one event at a time), or,
when the request contains FAIL_MARKER, with a captured HTTP 404 error
(pai_openai_error_404_model_not_found.json). Any other path is 404.

Run: python fake_llm.py PORT_FILE. It listens on 127.0.0.1 on a free port, writes the port to
PORT_FILE, and exits on SIGTERM or after LIFETIME_S.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_MARKER = b"please fail this answer"
LIFETIME_S = 600
EVENT_GAP_S = 0.01

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "openai_compat")


def fixture(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


STREAM = fixture("pai_openai_gpt-4o-mini_stream_text.sse")
ERROR_404 = fixture("pai_openai_error_404_model_not_found.json")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.split("?")[0] != "/v1/chat/completions":
            self.reply(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
        elif FAIL_MARKER in body:
            self.reply(404, ERROR_404)
        else:
            self.stream()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for event in STREAM.split(b"\n\n"):
                if event.strip():
                    self.wfile.write(event + b"\n\n")
                    self.wfile.flush()
                    time.sleep(EVENT_GAP_S)
        except OSError:
            pass
        self.close_connection = True


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: fake_llm.py PORT_FILE", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    threading.Timer(LIFETIME_S, server.shutdown).start()
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, sys.argv[1])
    server.serve_forever()
    os._exit(0)  # the lifetime timer may still be pending


if __name__ == "__main__":
    sys.exit(main())
