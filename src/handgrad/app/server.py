"""The draw-a-digit page: a small standard-library HTTP server around :class:`Predictor`.

``handgrad serve CHECKPOINT`` starts it. The page (``app/static``) draws on a canvas and posts the
canvas as a PNG to ``POST /api/predict``; an uploaded file goes to the same endpoint with its own type.
Both end in :meth:`Predictor.predict_image`, the code path of ``handgrad predict``, so the page shows
exactly what the command line would print for the same image.

Routes
    GET  /              the page
    GET  /static/NAME   its script, style sheet and other files from ``app/static``
    GET  /api/info      ``{"ready", "classes", "dataset", "input_shape", "max_body_bytes", "message"}``;
                        ``input_shape`` is the model's example shape (``[28, 28]`` for MNIST), from the
                        predictor; the page sizes its preview by it and shows colour inputs in colour
    POST /api/predict   image bytes (``Content-Type: image/png`` or ``image/jpeg``) ->
                        ``{"prediction", "label", "confidence", "probabilities", "classes", "input"}``

Every error is JSON, ``{"error": "what went wrong"}``, with a 4xx status for the client's mistakes
(404 unknown path, 405 wrong method, 400 undecodable or empty image, 411 no Content-Length,
413 body too large, 415 wrong content type, 421 a Host header that is not this machine) and a bare
500 for the server's own (the details go to the log, never to the client). The Host check defeats
DNS rebinding: a page on another site whose name was re-pointed at 127.0.0.1 still sends its own name.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import pathlib
import time
from http import HTTPStatus

logger = logging.getLogger("handgrad.server")

STATIC_DIR = pathlib.Path(__file__).with_name("static")
MAX_BODY_BYTES = 2 * 1024 * 1024
ACCEPTED_TYPES = ("image/png", "image/jpeg")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
NO_MODEL_MESSAGE = (
    "No model is loaded. Train a small one (a minute on the bundled sample) with\n"
    "    handgrad train --dataset mnist-sample --epochs 2 --out runs/quick\n"
    "then start the page with\n"
    "    handgrad serve runs/quick/best.npz"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = headers or {}


def _to_json(value):
    """``json.dumps`` fallback for NumPy scalars and arrays a predictor may return."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def host_name(header: str) -> str:
    """The host part of a Host header, lower-cased, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        end = header.find("]")
        return header[1:end] if end > 0 else header
    if header.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return header.split(":", 1)[0]
    return header


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str | None, bound_host: str) -> bool:
    """Whether a Host header names this machine: a loopback name, the bound host, or (when bound to
    every interface) an address literal. A domain name other than these is refused: that is what a DNS
    rebinding attack sends."""
    if not header:
        return False
    name = host_name(header)
    if name in LOCAL_NAMES or name == host_name(bound_host):
        return True
    return host_name(bound_host) in WILDCARD_HOSTS and _is_ip_literal(name)


class PredictionService:
    """What the handler needs from the model: its class names and ``predict_image`` (and, to size the
    page's preview, its ``input_shape``).

    Requests run in threads of their own. The layers cache their forward state for backward, so two
    threads running one network at once could mix their caches; :class:`Predictor` serialises its forward
    pass with a lock (images are still decoded in parallel). ``predictor`` may be None (no checkpoint
    given): the page then shows how to train one and ``/api/predict`` answers 503.
    """

    def __init__(self, predictor=None):
        self.predictor = predictor

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    def info(self) -> dict:
        if self.predictor is None:
            return {
                "ready": False,
                "classes": [],
                "dataset": None,
                "input_shape": None,
                "max_body_bytes": MAX_BODY_BYTES,
                "message": NO_MODEL_MESSAGE,
            }
        shape = getattr(self.predictor, "input_shape", None)  # None: a predictor that does not say
        return {
            "ready": True,
            "classes": list(self.predictor.classes),
            "dataset": self.predictor.dataset,
            "input_shape": None if shape is None else list(shape),
            "max_body_bytes": MAX_BODY_BYTES,
            "message": "",
        }

    def predict(self, data: bytes) -> dict:
        from handgrad.datasets import DatasetError

        if self.predictor is None:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, NO_MODEL_MESSAGE)
        try:
            return self.predictor.predict_image(data)
        except DatasetError as err:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None


class Handler(http.server.BaseHTTPRequestHandler):
    """One request: check the Host, route, answer JSON or a static file, log one line."""

    server_version = "handgrad"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stall mid-request before its connection is dropped

    # --- logging: exactly one line per answered request -----------------------------------------
    def handle_one_request(self):
        self._started = time.perf_counter()
        self._status = None
        self._sent = 0
        self._drain = False
        try:
            super().handle_one_request()
        finally:
            if self._status is not None:
                ms = (time.perf_counter() - self._started) * 1000
                request = self.requestline if self.requestline else "-"
                logger.info(
                    '%s "%s" %d %d %.1fms', self.client_address[0], request, self._status, self._sent, ms
                )

    def log_request(self, code="-", size="-"):
        self._status = int(code) if str(code).isdigit() else 0

    def log_message(self, format, *args):
        logger.debug("%s " + format, self.client_address[0], *args)

    def log_error(self, format, *args):
        logger.debug("%s " + format, self.client_address[0], *args)

    # --- answers ----------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict | None = None,
        cache: str = "no-store",
    ):
        if self.request_version == "HTTP/0.9":  # unparsable request line: answer as HTTP/1.0 anyway
            self.request_version = "HTTP/1.0"
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._sent = len(body)

    def send_json(self, status: int, payload: dict, headers: dict | None = None):
        body = json.dumps(payload, default=_to_json, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def send_error(self, code, message=None, explain=None):
        """The base class's own errors (bad request line, header too long, …) as JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        if not getattr(self, "command", None):
            self.command = "GET"  # the request line could not be parsed; answer with a body
        self.send_json(code, {"error": message or phrase})

    # --- routing ---------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _dispatch(self):
        try:
            host = self.headers.get("Host")
            if not host_allowed(host, self.server.bound_host):
                self._discard_body()
                what = f"unexpected Host header {host!r}" if host else "missing Host header"
                raise RequestError(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    f"{what}; open the page at http://127.0.0.1 or http://localhost",
                )
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            self._route(path)
        except RequestError as err:
            self.send_json(err.status, {"error": err.message}, err.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception:
            logger.exception("internal error while answering %r", self.requestline)
            self.close_connection = True
            if self._status is None:  # nothing sent yet: answer; otherwise just close the connection
                with contextlib.suppress(OSError):
                    self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal server error"})

    def _route(self, path: str):
        if path == "/api/predict":
            self._only("POST")
            self.send_json(HTTPStatus.OK, self.server.service.predict(self._read_image()))
        elif path == "/api/info":
            self._only("GET", "HEAD")
            self.send_json(HTTPStatus.OK, self.server.service.info())
        elif path in ("/", "/index.html"):
            self._only("GET", "HEAD")
            self._static("index.html")
        elif path.startswith("/static/"):
            self._only("GET", "HEAD")
            self._static(path[len("/static/") :])
        else:
            self._discard_body()
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _only(self, *methods):
        if self.command not in methods:
            self._discard_body()
            raise RequestError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} is not allowed here; use {' or '.join(methods)}",
                {"Allow": ", ".join(methods)},
            )

    def _discard_body(self):
        """A refused request with a body: do not read it (see :meth:`_refuse_body`)."""
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self._refuse_body()

    def _static(self, name: str):
        # Only the plain files directly inside app/static: no subfolders, no "..", no hidden files.
        files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith(".")}
        if name not in files or files[name].suffix not in CONTENT_TYPES:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        path = files[name]
        self._send(HTTPStatus.OK, path.read_bytes(), CONTENT_TYPES[path.suffix], cache="no-cache")

    def _read_image(self) -> bytes:
        """The request body, after checking its declared length (before reading it) and its type."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse_body()
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length, not chunked"
            )
        length = self.headers.get("Content-Length")
        if length is None:
            self._refuse_body()
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if not length.strip().isdigit():
            self._refuse_body()
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length!r}")
        size = int(length)
        if size > MAX_BODY_BYTES:
            self._refuse_body()
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body of {size} bytes is larger than the limit of "
                f"{MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES // (1024 * 1024)} MB)",
            )
        data = self.rfile.read(size)
        if len(data) != size:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of {size} bytes")
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in ACCEPTED_TYPES:
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported content type {content_type or '(none)'!r}; "
                "send a PNG (image/png) or a JPEG (image/jpeg)",
            )
        if size == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is empty; send an image")
        return data

    # --- a refused body is never read, but drained after the answer -------------------------------
    def _refuse_body(self):
        """Answer without reading the body, then close the connection. Closing a socket with unread
        data makes the kernel reset it, and the client may lose the answer before reading it, so
        :meth:`finish` discards (without keeping) what the client still sends, for a short while."""
        self.close_connection = True
        self._drain = True

    def finish(self):
        if getattr(self, "_drain", False):
            self._drain = False
            deadline = time.monotonic() + 2.0
            left = 4 * MAX_BODY_BYTES
            try:
                self.connection.settimeout(0.5)
                while left > 0 and time.monotonic() < deadline:
                    chunk = self.rfile.read1(min(65536, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass
        super().finish()


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection; threads are daemons so that stopping never waits for a stalled client."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog; socketserver's default of 5 resets bursts of connections

    def __init__(self, address, service: PredictionService):
        self.bound_host = address[0]
        self.service = service
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in WILDCARD_HOSTS:
            host = "127.0.0.1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(predictor=None, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A ready-to-run server (call ``serve_forever``) around a Predictor, or None for no model.

    ``port=0`` picks a free port; read it back from ``server.server_address[1]`` or ``server.url``.
    """
    return Server((host, port), PredictionService(predictor))


def serve(checkpoint=None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the draw-a-digit page for ``checkpoint`` (a path to ``best.npz``) until interrupted.

    Raises :class:`handgrad.app.checkpoint.CheckpointError` for a checkpoint that cannot be loaded and
    ``OSError`` when the address cannot be bound (the port is taken, for instance).
    """
    predictor = None
    if checkpoint is not None:
        from handgrad.app.predict import Predictor

        predictor = Predictor.from_checkpoint(checkpoint)
    try:
        server = make_server(predictor, host, port)
    except OSError as err:  # port taken, address not on this machine, ...
        raise OSError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); "
            "choose another --port, or --host 127.0.0.1"
        ) from err
    if not logging.getLogger().handlers and not logger.handlers:  # one line per request, on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with server:
        if predictor is None:
            print(NO_MODEL_MESSAGE, flush=True)
            print(f"Meanwhile the page at {server.url} says the same.", flush=True)
        else:
            shape = "×".join(map(str, predictor.input_shape))
            print(
                f"Serving {checkpoint} ({predictor.dataset}, {len(predictor.classes)} classes, "
                f"{shape} inputs) "
                f"at {server.url}  (Ctrl-C stops)",
                flush=True,
            )
        if host_name(host) not in LOCAL_NAMES:
            print(f"note: listening on {host}, reachable from other machines on the network", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)
