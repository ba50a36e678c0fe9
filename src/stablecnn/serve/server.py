"""The HTTP server: the standard library's ``ThreadingHTTPServer``, one thread per connection.

Routes (the public contract; see :mod:`stablecnn.serve.inputs` for the bodies):

==========================  ======================================================================
``GET /``                   the page (``static/index.html``)
``GET /static/<name>``      the page's script, style sheet and icon, from the package only
``GET /api/model``          the model card (:meth:`Predictor.describe`) and ``max_body_bytes``
``POST /api/predict``       the prediction for one picture (:meth:`Predictor.predict`)
==========================  ======================================================================

Statuses: 200; 400 malformed JSON, base64 or picture, or a bad ``Content-Length``; 404 an
unknown path; 405 a known path with another method (with ``Allow``); 411 no ``Content-Length``;
413 a body over ``max_body_bytes`` (2 MiB by default: :data:`MAX_BODY_BYTES`), refused from its
header before it is read; 415 another content type or none; 422 a request that does not fit
(the message says what was expected); 500 a bug, whose traceback goes to stderr and whose
connection is closed, the server going on. Every error body is JSON ``{"error": message,
"status": code}``. A client that goes away or stalls (its body ends early, the connection is reset
or broken, a read or write times out) is one line on stderr, its address and what happened, with
no traceback (printed with or without ``log_requests``).

Nothing is written to disk: bodies are read into memory (at most ``max_body_bytes``) and decoded
there, at most as many at once as there are CPUs (each picture may take up to
:data:`stablecnn.data.pictures.MAX_IMAGE_PIXELS` float32 values while it is framed).

Static files are read from the package once, when the server starts, into a table keyed by URL
path; a request's path is looked up in that table and never joined to a folder, so no path
(``/../``, ``%2e%2e%2f``, ``//etc/passwd``) can reach another file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from stablecnn.errors import ConfigError
from stablecnn.serve.inputs import MAX_BODY_BYTES, RequestError, read_request
from stablecnn.serve.predictor import Predictor

IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle, or a body take to arrive
LINGER_SECONDS = 2.0  # after refusing a body unread, how long its bytes are drained (see _linger)
# a client gone or stalled (BrokenPipeError, ConnectionResetError, ...; a read or write timed out)
CLIENT_GONE = (ConnectionError, TimeoutError)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# the page loads nothing from elsewhere: scripts, styles, pictures and requests are its own
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def static_files() -> dict[str, tuple[bytes, str]]:
    """``{URL path: (bytes, content type)}`` of the page's files shipped in the package:
    ``/`` and ``/index.html`` for the page, ``/static/<name>`` for the others (only files of
    the types in :data:`STATIC_TYPES`)."""
    folder = resources.files("stablecnn.serve") / "static"
    table = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            table[f"/static/{entry.name}"] = (entry.read_bytes(), STATIC_TYPES[suffix])
    table["/"] = table["/index.html"] = table.pop("/static/index.html")
    return table


def log_line(address: str, text: str) -> None:
    """Print ``text`` about the client at ``address`` as one line on stderr."""
    sys.stderr.write(f"{address} - {text}\n")


def is_local(host: str) -> bool:
    """``host`` names only loopback addresses (127.0.0.0/8, ::1; ``localhost``): nothing but
    this machine can reach a server bound to it. An empty host means every interface."""
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def exposure_warning(host: str) -> str | None:
    """The warning to print when binding to ``host`` exposes the server, else ``None``."""
    if is_local(host):
        return None
    return (
        f"warning: listening on {host or 'every interface'}, not only this machine: other "
        f"machines that reach it can use the page and its API (no login, no TLS). "
        f"Use --host 127.0.0.1 to keep it local."
    )


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server holding one :class:`Predictor` and the page's files.

    Args:
        address: ``(host, port)``; port 0 picks a free port (see :attr:`url`).
        predictor: the model to serve.
        max_body_bytes: the largest request body read (larger ones get 413).
        log_requests: print one line per request to stderr (the standard library's format).

    Raises:
        OSError: the address cannot be bound (in use, not this machine's).
    """

    daemon_threads = True  # a connection left open does not keep the process alive

    def __init__(
        self,
        address: tuple[str, int],
        predictor: Predictor,
        max_body_bytes: int = MAX_BODY_BYTES,
        log_requests: bool = False,
    ):
        self.predictor = predictor
        self.max_body_bytes = int(max_body_bytes)
        self.log_requests = log_requests
        self.static = static_files()
        # pictures decoded at once: each may hold up to MAX_IMAGE_PIXELS of float32 while it is
        # framed, so this bounds the memory of many large uploads; more than the cores is no faster
        self.decoding = threading.BoundedSemaphore(max(2, os.cpu_count() or 1))
        self.card = {**predictor.card, "max_body_bytes": self.max_body_bytes}
        infos = socket.getaddrinfo(address[0] or None, address[1], type=socket.SOCK_STREAM)
        self.address_family = infos[0][0]  # IPv6 hosts ("::1") too
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the host (slow on some networks;
        the name is used for nothing here)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    @property
    def url(self) -> str:
        """``http://host:port/`` of the bound socket (IPv6 hosts in brackets)."""
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def handle_error(self, request, client_address) -> None:
        """A client gone while the standard library read its request line and headers (or wrote
        its own refusal) is one line on stderr; anything else keeps the traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            log_line(client_address[0], f"the client went away ({type(exc).__name__}: {exc})")
        else:
            super().handle_error(request, client_address)


def make_server(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_requests: bool = False,
) -> ModelServer:
    """A :class:`ModelServer` bound to ``host:port`` (not yet serving: call ``serve_forever``).

    Raises:
        ConfigError: the address cannot be bound; the message names it and the reason.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0-65535 (0: any free port), got {port}")
    try:
        return ModelServer((host, port), predictor, max_body_bytes, log_requests)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


class Handler(BaseHTTPRequestHandler):
    """One connection's requests (HTTP/1.1, kept alive); see the module doc for the routes."""

    server: ModelServer
    protocol_version = "HTTP/1.1"
    server_version = "stablecnn-serve"
    timeout = IDLE_TIMEOUT
    # headers and a small body are two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK, 40 ms on Linux (measured with benchmarks/serve_load.py:
    # a pixels request's median 44 ms on md1, 0.9 ms without)
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    # -- methods --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self._guard(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def do_HEAD(self) -> None:  # noqa: N802 - as GET, without the body (see _send)
        self._guard(self._get)

    def do_PUT(self) -> None:  # noqa: N802
        self._guard(self._other)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT  # noqa: N815

    def _get(self, path: str) -> None:
        if path == "/api/model":
            self._json(200, self.server.card)
        elif path in self.server.static:
            body, content_type = self.server.static[path]
            self._send(200, body, content_type, cache="no-cache")
        elif path == "/api/predict":
            self._not_allowed("POST")
        else:
            self._not_found(path)

    def _post(self, path: str) -> None:
        if path == "/api/predict":
            body = self._body()
            with self.server.decoding:
                image, maps = read_request(
                    body,
                    self.headers.get("Content-Type", ""),
                    urlsplit(self.path).query,
                    self.server.predictor.channels,
                    self.server.predictor.size,
                )
            self._json(200, self.server.predictor.predict(image, feature_maps=maps))
        elif path == "/api/model" or path in self.server.static:
            self._not_allowed("GET")
        else:
            self._not_found(path)

    def _other(self, path: str) -> None:
        if path == "/api/predict":
            self._not_allowed("POST")
        elif path == "/api/model" or path in self.server.static:
            self._not_allowed("GET")
        else:
            self._not_found(path)

    # -- the body -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        """The request's body, refused from its headers when it would be too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "chunked bodies are not accepted; send a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self.close_connection = True
            raise RequestError(411, "a POST needs a Content-Length header")
        length = lengths[0].strip()
        if not (length.isascii() and length.isdigit()) or any(v.strip() != length for v in lengths):
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {', '.join(lengths)[:40]!r}")
        size = int(length)
        limit = self.server.max_body_bytes
        if size > limit:
            self._drain_after = size
            raise RequestError(
                413,
                f"the body is {size:,} bytes, more than the limit of {limit:,} bytes "
                f"({limit / 2**20:g} MiB)",
            )
        body = self.rfile.read(size)
        self._consumed = True
        if len(body) < size:  # the client closed its end: said here, then answered if it listens
            message = f"the body ended after {len(body):,} of {size:,} bytes"
            self._client_gone(message)
            raise RequestError(400, message)
        return body

    # -- answers --------------------------------------------------------------------------------
    def _guard(self, route) -> None:
        """Run ``route(path)`` (see :meth:`_answer`); a client that goes away or stalls, reading
        the request or writing the answer, is one line on stderr (:meth:`_client_gone`)."""
        self._drain_after, self._consumed, self._sending, self._gone = 0, False, False, False
        try:
            self._answer(route)
        except CLIENT_GONE as exc:
            self._client_gone(f"{type(exc).__name__}: {exc}")
        if self._drain_after:
            self._linger(self._drain_after)

    def _answer(self, route) -> None:
        """Run ``route(path)``; turn a :class:`RequestError` into its JSON answer and anything
        else but a client gone (:data:`CLIENT_GONE`) into a 500, so that no request stops the
        server."""
        try:
            route(urlsplit(self.path).path)
        except RequestError as exc:
            self._error(exc.status, str(exc))
        except CLIENT_GONE:
            raise
        except Exception:  # noqa: BLE001 - a bug: reported, and the server goes on
            traceback.print_exc()
            self.close_connection = True
            with contextlib.suppress(OSError):  # the traceback says it all
                self._error(500, "internal error in stablecnn serve (see the server's output)")

    def _client_gone(self, what: str) -> None:
        """Close the connection and say once, in one line on stderr, that the client went away
        while its request was read or the answer sent, and ``what`` happened."""
        self.close_connection = True
        if not self._gone:
            self._gone = True
            doing = "sending the answer" if self._sending else "reading the request"
            path = repr(urlsplit(self.path).path[:80])[1:-1]  # control characters escaped
            log_line(
                self.address_string(),
                f"{self.command} {path}: the client went away while {doing} ({what})",
            )

    def _error(self, status: int, message: str) -> None:
        headers = {}
        if status == 405:
            headers["Allow"] = self._allow
        self._json(status, {"error": message, "status": status}, headers)

    def _not_allowed(self, allow: str) -> None:
        self._allow = allow
        raise RequestError(405, f"{self.command} is not allowed here; use {allow}")

    def _not_found(self, path: str) -> None:
        raise RequestError(
            404,
            f"no such page or API: {path[:80]!r} (the API is GET /api/model and POST /api/predict)",
        )

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json", cache="no-store", headers=headers)

    def _send(self, status, body: bytes, content_type: str, cache: str, headers=None) -> None:
        self._sending = True
        has_body = self.headers.get("Content-Length", "0").strip() not in ("", "0")
        if (
            self._drain_after
            or (has_body and not self._consumed)
            or "Transfer-Encoding" in self.headers
        ):
            self.close_connection = True  # a body left unread would be read as the next request
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _linger(self, declared: int) -> None:
        """After refusing a body unread: stop sending, then read and drop what the client
        still sends (at most ``declared`` bytes, for :data:`LINGER_SECONDS`), so closing does
        not reset the connection before the client has read the refusal."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.25)
            deadline, left = time.monotonic() + LINGER_SECONDS, declared
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """The standard library's own refusals (a malformed request line, a header too long, an
        unknown method) as JSON too, and the connection closed."""
        short, long = self.responses.get(code, ("error", ""))
        text = f"{message or short}: {explain or long}".rstrip(": ")
        body = json.dumps({"error": text, "status": code}).encode()
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line unread: answer in HTTP/1.0,
            self.request_version = "HTTP/1.0"  # with a status line (HTTP/0.9 has none)
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if self.server.log_requests:
            log_line(self.address_string(), format % args)
