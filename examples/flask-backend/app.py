"""A tiny backend for Switchyard demos, as in the Apache mod_proxy tutorial.

Routes:
  /            the message from $MESSAGE (default "Hello world!"), as text/plain
  /healthz     "ok" (for health checks)
  /headers     JSON object of the request headers as this backend saw them
               (repeated headers joined with ", "): shows X-Forwarded-* and Host
  /echo/...    JSON with method, path, query string, client address, headers and the
               backend's own name: shows what the proxy sent (path rewriting, Host)
  /redirect    302 to an absolute URL on this backend (?to=/path, default /): shows
               redirect rewriting (rewrite_redirects, Apache's ProxyPassReverse)

Environment: MESSAGE, HOST (default 0.0.0.0), PORT (default 8080), BACKEND_NAME
(default the host name). Works with Flask 2.2 (Debian bookworm's python3-flask) and 3.x
(requirements.txt). plain_server.py answers the same without Flask.
"""

import os
import socket

from flask import Flask, Response, jsonify, redirect, request

MESSAGE = os.environ.get("MESSAGE", "Hello world!")
BACKEND_NAME = os.environ.get("BACKEND_NAME") or socket.gethostname()

app = Flask(__name__)


def _headers():
    seen = {}
    for name, value in request.headers.items():
        seen[name] = f"{seen[name]}, {value}" if name in seen else value
    return seen


@app.route("/")
def home():
    return Response(MESSAGE, mimetype="text/plain")


@app.route("/healthz")
def healthz():
    return Response("ok", mimetype="text/plain")


@app.route("/headers")
def headers():
    return jsonify(_headers())


@app.route("/echo", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@app.route("/echo/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def echo(rest):
    return jsonify(
        {
            "backend": BACKEND_NAME,
            "message": MESSAGE,
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "remote_addr": request.remote_addr,
            "headers": _headers(),
            "body_length": len(request.get_data()),
        }
    )


@app.route("/redirect")
def to_elsewhere():
    target = request.args.get("to", "/")
    if not target.startswith("/"):
        target = "/" + target
    # An absolute URL naming this backend, as many applications send: the proxy should rewrite it.
    return redirect(request.host_url.rstrip("/") + target, code=302)


def main():
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8080"))
    # Werkzeug's development server, as in the tutorial: fine for demos. It answers HTTP/1.1
    # but closes every connection (Connection: close), so a proxy cannot pool connections to it;
    # plain_server.py keeps them open.
    app.run(host=host, port=port, threaded=True)


if __name__ == "__main__":
    main()
