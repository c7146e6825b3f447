"""Credentials for Prometheus (the experiment's Secrets, the operator's files) and the providers using them.

Where they come from:

- ``spec.prometheus.bearerTokenFrom`` / ``basicAuth`` / ``tlsConfig``: keys of
  Secrets in the experiment's namespace, read at every evaluation;
- otherwise, for the operator's default Prometheus only (``--prometheus-url``),
  the files ``modelrollout run`` was given (``--prometheus-bearer-token-file``,
  ``--prometheus-username`` with ``--prometheus-password-file``,
  ``--prometheus-ca-file``), typically a mounted Secret, read at every
  evaluation too.  They are never sent to an address a spec names: anybody
  who may create an experiment would otherwise collect the operator's token.

Values are read when needed and kept only inside the HTTP session that sends
them.  A provider is cached per address, timeout and *source* of credentials;
a keyed hash of the values (a key random per process, so the hash says
nothing about a low-entropy password) tells when a Secret or file was
rotated, and the next evaluation builds a fresh session with the new values.

Nothing here ever shows a value: errors name the field, the Secret and key
(or the file), and what is wrong with it.  A credential that cannot be read
is no crash and never good data: the experiment gets an :class:`Unavailable`
provider whose every query fails with that error, so the core treats it
exactly as a Prometheus refusing our credentials (HTTP 401) -- the no-data
path: hold, say why in status and an Event, and after ``noDataLimit``
evaluations in a row roll back.  It resolves itself at the next evaluation
once the Secret is there (GitOps tools and secret operators often create
Secrets after the objects that use them).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Protocol

from modelrollout import ports, spec, spec_hooks, webhooks
from modelrollout.providers import prometheus

logger = logging.getLogger(__name__)

# RFC 6750's b64token is stricter; anything visible that a header can carry is accepted.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_USERNAME = re.compile(r"[^:\x00-\x1f\x7f]+")


@dataclasses.dataclass(frozen=True)
class OperatorCredentials:
    """What ``modelrollout run`` was given for its default Prometheus: paths of files, never values."""

    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False

    def problems(self) -> list[str]:
        """What is contradictory or incomplete about these settings (for the command line)."""
        found = []
        if self.bearer_token_file and (self.username or self.password_file):
            found.append("choose either a bearer token or basic auth for Prometheus, not both")
        if bool(self.username) != bool(self.password_file):
            found.append(
                "basic auth for Prometheus needs both --prometheus-username and --prometheus-password-file"
            )
        if self.username and not _USERNAME.fullmatch(self.username):
            found.append("--prometheus-username must not contain ':' or control characters")
        if self.ca_file and self.insecure_skip_verify:
            found.append("--prometheus-ca-file and --prometheus-insecure-skip-verify contradict each other")
        return found


class CredentialError(Exception):
    """Credentials cannot be read or used; the message names their source, never a value."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Resolved credentials.  ``repr`` shows no value, so logging one by mistake leaks nothing."""

    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    ca_pem: str | None = dataclasses.field(default=None, repr=False)  # from a Secret: needs a file
    ca_file: str | None = None  # the operator's own CA file
    insecure_skip_verify: bool = False
    fingerprint: str = ""  # a keyed hash of every value: changes when any of them is rotated


def source_of(
    settings: spec.PrometheusSpec, namespace: str, operator: OperatorCredentials | None
) -> tuple[str, ...]:
    """Where the credentials come from, in names only: experiments sharing a source share a session."""
    found: list[str] = []
    basic = settings.basic_auth
    tls = settings.tls_config
    for field, source in (
        ("bearerTokenFrom", settings.bearer_token_from),
        ("basicAuth.usernameFrom", basic.username_from if basic else None),
        ("basicAuth.passwordFrom", basic.password_from if basic else None),
        ("tlsConfig.caFrom", tls.ca_from if tls else None),
    ):
        if source is not None:
            found.append(f"{field}={namespace}/{source.secret_key_ref.name}/{source.secret_key_ref.key}")
    if basic is not None and basic.username is not None:
        found.append(f"basicAuth.username={basic.username}")
    if tls is not None and tls.insecure_skip_verify:
        found.append("tlsConfig.insecureSkipVerify")
    if operator is not None and settings.bearer_token_from is None and basic is None:
        found.append("operator-auth")
    if operator is not None and tls is None:
        found.append("operator-tls")
    return tuple(found)


def resolve(
    settings: spec.PrometheusSpec,
    namespace: str,
    secrets_reader: webhooks.Secrets,
    operator: OperatorCredentials | None,
    key: bytes,
) -> Credentials:
    """Read every credential ``settings`` (or, with ``operator``, the operator's files) asks for.

    ``operator`` is given only when the address is the operator's default one.
    Raises :class:`CredentialError`.
    """

    def secret(source: spec_hooks.ValueFrom, field: str) -> tuple[str, str]:
        ref = source.secret_key_ref
        where = f"spec.prometheus.{field}: Secret {namespace}/{ref.name} key {ref.key}"
        try:
            return secrets_reader.read(namespace, ref.name, ref.key), where
        except webhooks.SecretError as e:
            raise CredentialError(f"spec.prometheus.{field}: {e}") from None

    headers: dict[str, str] = {}
    if settings.bearer_token_from is not None:
        headers["Authorization"] = "Bearer " + _token(*secret(settings.bearer_token_from, "bearerTokenFrom"))
    elif settings.basic_auth is not None:
        basic = settings.basic_auth
        if basic.username_from is not None:
            username = _username(*secret(basic.username_from, "basicAuth.usernameFrom"))
        else:
            assert basic.username is not None  # exactly one of them (spec validation)
            username = basic.username
        password = _password(*secret(basic.password_from, "basicAuth.passwordFrom"))
        headers["Authorization"] = _basic(username, password)
    elif operator is not None and operator.bearer_token_file:
        path = operator.bearer_token_file
        headers["Authorization"] = "Bearer " + _token(
            _read_file(path, "--prometheus-bearer-token-file"), f"--prometheus-bearer-token-file {path}"
        )
    elif operator is not None and operator.username and operator.password_file:
        path = operator.password_file
        password = _password(
            _read_file(path, "--prometheus-password-file"), f"--prometheus-password-file {path}"
        )
        headers["Authorization"] = _basic(operator.username, password)

    ca_pem: str | None = None
    ca_file: str | None = None
    trusted = ""  # the CA's text, whichever source, for the fingerprint
    insecure = False
    if settings.tls_config is not None:
        insecure = settings.tls_config.insecure_skip_verify
        if settings.tls_config.ca_from is not None:
            ca_pem = trusted = _ca(*secret(settings.tls_config.ca_from, "tlsConfig.caFrom"))
    elif operator is not None:
        insecure = operator.insecure_skip_verify
        if operator.ca_file:
            ca_file = operator.ca_file
            trusted = _ca(_read_file(ca_file, "--prometheus-ca-file"), f"--prometheus-ca-file {ca_file}")

    material = json.dumps([sorted(headers.items()), trusted, ca_file, insecure]).encode()
    return Credentials(
        headers=headers,
        ca_pem=ca_pem,
        ca_file=ca_file,
        insecure_skip_verify=insecure,
        fingerprint=hmac.new(key, material, hashlib.sha256).hexdigest(),
    )


def _read_file(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CredentialError(f"{flag} {path}: cannot read it ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise CredentialError(f"{flag} {path}: is not UTF-8 text") from None


def _token(value: str, where: str) -> str:
    token = value.strip()  # a Secret made from a file usually ends in a newline
    if not token:
        raise CredentialError(f"{where} is empty")
    if not _TOKEN.fullmatch(token):
        raise CredentialError(f"{where} is no bearer token: it holds spaces, control or non-ASCII characters")
    return token


def _username(value: str, where: str) -> str:
    username = value.strip()
    if not username:
        raise CredentialError(f"{where} is empty")
    if not _USERNAME.fullmatch(username):
        raise CredentialError(f"{where} is no basic-auth username: it holds ':' or control characters")
    return username


def _password(value: str, where: str) -> str:
    password = value.rstrip("\r\n")  # only the line end a file adds: spaces may be part of a password
    if not password:
        raise CredentialError(f"{where} is empty")
    return password


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _ca(value: str, where: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise CredentialError(f"{where} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError):
        raise CredentialError(f"{where} holds no valid PEM CA certificate") from None
    return value


# --------------------------------------------------------------------------- providers


class ClosableProvider(ports.MetricProvider, Protocol):
    def close(self) -> None: ...


# (address, timeout in seconds, headers, verify) -> a provider; PrometheusProvider's own signature.
Build = Callable[[str, float, Mapping[str, str], bool | str], ClosableProvider]


def build_prometheus(
    url: str, timeout: float, headers: Mapping[str, str], verify: bool | str
) -> ClosableProvider:
    return prometheus.PrometheusProvider(url, timeout=timeout, headers=headers, verify=verify)


class Unavailable:
    """The provider of a Prometheus whose credentials cannot be read: every query fails, saying why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def query(self, promql: str, at: datetime.datetime | None = None) -> ports.QueryResult:
        return ports.QueryResult(ports.QueryOutcome.ERROR, detail=self.reason)

    def query_series(self, promql: str, at: datetime.datetime | None = None) -> ports.SeriesResult:
        return ports.SeriesResult(ports.QueryOutcome.ERROR, detail=self.reason)

    def is_online(self) -> bool:
        return False


@dataclasses.dataclass
class _Cached:
    fingerprint: str
    provider: ClosableProvider
    ca_path: str | None


Slot = tuple[str, float, tuple[str, ...]]


class Providers:
    """Prometheus providers by address, timeout and source of credentials; rebuilt when a credential changes.

    Thread-safe: ticks of different experiments ask for providers from worker threads.
    """

    def __init__(
        self,
        secrets_reader: webhooks.Secrets,
        operator: OperatorCredentials | None = None,
        default_url: str | None = None,
        build: Build = build_prometheus,
    ) -> None:
        self._secrets = secrets_reader
        self._operator = operator or OperatorCredentials()
        self._default = default_url.rstrip("/") if default_url else None
        self._build = build
        self._key = secrets.token_bytes(32)  # fingerprints mean nothing outside this process
        self._lock = threading.Lock()
        self._cache: dict[Slot, _Cached] = {}
        self._failing: dict[Slot, Unavailable] = {}
        self._ca_dir: str | None = None

    def provider(self, address: str, settings: spec.PrometheusSpec, namespace: str) -> ports.MetricProvider:
        """The provider for ``settings`` (the experiment's own, in ``namespace``) at ``address``."""
        address = address.rstrip("/")
        operator = self._operator if address == self._default else None
        slot: Slot = (address, settings.timeout.total_seconds(), source_of(settings, namespace, operator))
        try:
            credentials = resolve(settings, namespace, self._secrets, operator, self._key)
        except CredentialError as e:
            return self._unavailable(slot, str(e))
        with self._lock:
            self._failing.pop(slot, None)
            cached = self._cache.get(slot)
            if cached is not None and cached.fingerprint == credentials.fingerprint:
                return cached.provider
            ca_path = self._ca_file(credentials.ca_pem) if credentials.ca_pem is not None else None
            verify: bool | str = (
                False if credentials.insecure_skip_verify else ca_path or credentials.ca_file or True
            )
            provider = self._build(address, slot[1], credentials.headers, verify)
            self._cache[slot] = _Cached(credentials.fingerprint, provider, ca_path)
            if cached is not None:
                logger.info("Prometheus credentials changed (%s): new session", _shown(slot))
                self._retire(cached)
        return provider

    def close(self) -> None:
        with self._lock:
            for cached in self._cache.values():
                cached.provider.close()
            self._cache.clear()
            if self._ca_dir is not None:
                shutil.rmtree(self._ca_dir, ignore_errors=True)
                self._ca_dir = None

    def _unavailable(self, slot: Slot, reason: str) -> Unavailable:
        """Credentials gone or broken: drop the session holding the old ones; log once per new reason.

        The same reason gets the same provider back, so whatever the caller keeps per provider
        (a batching cache) does not grow while the Secret stays missing.
        """
        with self._lock:
            cached = self._cache.pop(slot, None)
            if cached is not None:
                self._retire(cached)
            known = self._failing.get(slot)
            if known is not None and known.reason == reason:
                return known
            self._failing[slot] = known = Unavailable(reason)
        logger.warning("Prometheus credentials unusable: %s", reason)
        return known

    def _retire(self, cached: _Cached) -> None:
        """Close a replaced session (requests in flight finish); delete its CA file if unused (lock held)."""
        cached.provider.close()
        if cached.ca_path and all(other.ca_path != cached.ca_path for other in self._cache.values()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cached.ca_path)

    def _ca_file(self, pem: str) -> str:
        """A private file (0600, in a 0700 directory) with ``pem``, for requests' verify= (lock held)."""
        if self._ca_dir is None:
            self._ca_dir = tempfile.mkdtemp(prefix="modelrollout-prometheus-ca-")  # mode 0700
            weakref.finalize(self, shutil.rmtree, self._ca_dir, True)
        name = hmac.new(self._key, pem.encode(), hashlib.sha256).hexdigest()[:32]
        path = os.path.join(self._ca_dir, f"ca-{name}.pem")
        if not os.path.exists(path):
            descriptor, staging = tempfile.mkstemp(dir=self._ca_dir, suffix=".tmp")  # mode 0600
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                f.write(pem)
            os.replace(staging, path)
        return path


def _shown(slot: Slot) -> str:
    """A slot for a log line: the source's names, not the address (it may hold user:password@)."""
    return ", ".join(slot[2]) or "no credentials"
