"""The same backend as app.py with only the Python standard library (no Flask).

scripts/demo.sh falls back to it only when python3 cannot import flask and requirements.txt
cannot be installed into a virtualenv either (no venv module, no access to PyPI). Same routes,
bodies and environment variables (MESSAGE, HOST, PORT, BACKEND_NAME); see app.py.
"""

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MESSAGE = os.environ.get("MESSAGE", "Hello world!")
BACKEND_NAME = os.environ.get("BACKEND_NAME") or socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a proxy's connection pool expects
    server_version = "plain-backend"

    def _send(self, status, body, content_type, extra=None):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, obj):
        self._send(200, json.dumps(obj) + "\n", "application/json")

    def _headers(self):
        seen = {}
        for name, value in self.headers.items():
            seen[name] = f"{seen[name]}, {value}" if name in seen else value
        return seen

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        path = url.path
        if path == "/":
            self._send(200, MESSAGE, "text/plain; charset=utf-8")
        elif path == "/healthz":
            self._send(200, "ok", "text/plain; charset=utf-8")
        elif path == "/headers":
            self._json(self._headers())
        elif path == "/echo" or path.startswith("/echo/"):
            self._json(
                {
                    "backend": BACKEND_NAME,
                    "message": MESSAGE,
                    "method": self.command,
                    "path": path,
                    "query": url.query,
                    "remote_addr": self.client_address[0],
                    "headers": self._headers(),
                    "body_length": len(body),
                }
            )
        elif path == "/redirect":
            target = parse_qs(url.query).get("to", ["/"])[0]
            if not target.startswith("/"):
                target = "/" + target
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            self._send(302, "", "text/plain", {"Location": f"http://{host}{target}"})
        else:
            self._send(404, "Not Found\n", "text/plain; charset=utf-8")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))


def main():
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"plain backend ({MESSAGE!r}) listening on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
