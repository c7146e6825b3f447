"""An authenticating (and optionally TLS-terminating) proxy in front of the local stack's Prometheus.

Real Prometheus setups put authentication in front of Prometheus (kube-rbac-proxy,
an ingress, a managed service); Prometheus itself checks nothing.  To test
credentials end to end, this proxy answers 401 to every request whose
``Authorization`` header is not exactly the expected one, and forwards the
others to the real Prometheus unchanged.  The expected header can change while
it runs (a rotated credential).  With :func:`make_tls` it serves HTTPS with a
certificate for 127.0.0.1 signed by a CA of its own (made with the ``openssl``
command), so a client must be given that CA to trust it.

It never logs or echoes a header: its 401 body is a fixed text.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import shutil
import socketserver
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    ca: Path  # the CA's certificate (PEM): what a client must trust
    cert: Path  # the server's certificate for IP 127.0.0.1, signed by the CA
    key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca.read_text()


class OpensslNotFound(RuntimeError):
    """The ``openssl`` command is not installed."""


def make_tls(folder: Path) -> TLSFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 it signed, in ``folder``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise OpensslNotFound("the openssl command is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, request = folder / "server.crt", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")  # fast to make
    run("req", "-x509", *new_key, "-days", "2", "-subj", "/CN=modelrollout test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(request))
    run("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
    return TLSFiles(ca, cert, key)


class AuthProxy:
    """Forwards to ``upstream`` the requests carrying ``Authorization: <expected>``; 401 for the others."""

    def __init__(self, upstream: str, expected: str | None, tls: TLSFiles | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self._expected = expected
        self._tls = tls
        self._lock = threading.Lock()
        self.accepted = 0
        self.refused = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def expected(self) -> str | None:
        with self._lock:
            return self._expected

    @expected.setter
    def expected(self, value: str | None) -> None:
        """What the ``Authorization`` header must be (None: anything, even none, is let through)."""
        with self._lock:
            self._expected = value

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._tls.cert, self._tls.key)
            # The handshake happens in the handler's thread, so a client refusing it stops nobody.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="authproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy was never started")
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def _admit(self, authorization: str | None) -> bool:
        with self._lock:
            admitted = self._expected is None or authorization == self._expected
            if admitted:
                self.accepted += 1
            else:
                self.refused += 1
            return admitted


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: AuthProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that refused our certificate, or hung up: nothing to report."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request line is all it would say, and tests have no use for it."""

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._forward(self.rfile.read(length) if length else b"")

    def _forward(self, body: bytes | None) -> None:
        proxy = self.server.proxy
        if not proxy._admit(self.headers.get("Authorization")):
            self._answer(401, b"Unauthorized\n", {"Content-Type": "text/plain", "WWW-Authenticate": "Bearer"})
            return
        request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP | {"host", "authorization"}:
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as upstream:
                status, data, headers = upstream.status, upstream.read(), dict(upstream.headers.items())
        except urllib.error.HTTPError as e:
            status, data, headers = e.code, e.read(), dict(e.headers.items())
        except OSError as e:
            self._answer(502, f"upstream unreachable: {type(e).__name__}\n".encode(), {})
            return
        self._answer(status, data, {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP})

    def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
