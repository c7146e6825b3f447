"""Credentials against a real Prometheus behind an authenticating proxy: data only with the right ones.

The proxy (``localstack.authproxy``) answers 401 unless the ``Authorization``
header is exactly the expected one, and can serve HTTPS with a certificate
from a CA made for the test; behind it is the session's real Prometheus.
Providers come from ``prometheus_auth.Providers`` with the real
PrometheusProvider, so what is tested is what the operator sends.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

from modelrollout import spec, webhooks
from modelrollout.localstack import authproxy
from modelrollout.localstack.prometheus import PrometheusServer
from modelrollout.ports import MetricProvider, QueryOutcome, QueryResult
from modelrollout.prometheus_auth import OperatorCredentials, Providers

NS = "ml"
TOKEN = "tok-7c1e52b9-never-shown"
ROTATED = "tok-0d93aa61-rotated"
PASSWORD = "pw-46f0-never-shown"
QUERY = "vector(42)"  # evaluated by the real Prometheus: an answer proves we got through


class Secrets:
    """Secrets as the API holds them (base64), read as kube.KubeSecrets reads them."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}

    def put(self, name: str, values: Mapping[str, str], namespace: str = NS) -> None:
        self.data[namespace, name] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}

    def read(self, namespace: str, name: str, key: str) -> str:
        if (namespace, name) not in self.data:
            raise webhooks.SecretError(f"Secret {namespace}/{name} not found")
        return webhooks.decode_secret_value(self.data[namespace, name], f"{namespace}/{name}", key)


def ref(key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": "prom-auth", "key": key}}


def ask(providers: Providers, address: str, namespace: str = NS, **prometheus: Any) -> QueryResult:
    provider: MetricProvider = providers.provider(
        address, spec.PrometheusSpec.model_validate({"timeout": "5s", **prometheus}), namespace
    )
    return provider.query(QUERY)


def assert_data(result: QueryResult) -> None:
    assert result == QueryResult(QueryOutcome.OK, 42.0), result


def assert_refused(result: QueryResult, *secrets: str) -> None:
    assert result.outcome is QueryOutcome.ERROR and result.detail == "Prometheus answered HTTP 401", result
    for secret in secrets:
        assert secret not in result.detail


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture
def providers(secrets: Secrets) -> Iterator[Providers]:
    made = Providers(secrets)
    yield made
    made.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> authproxy.TLSFiles:
    try:
        return authproxy.make_tls(tmp_path_factory.mktemp("tls"))
    except authproxy.OpensslNotFound as e:
        pytest.skip(str(e))


def test_bearer_token_from_a_secret_and_its_rotation(
    prometheus: PrometheusServer, secrets: Secrets, providers: Providers
) -> None:
    with authproxy.AuthProxy(prometheus.url, authproxy.bearer(TOKEN)) as proxy:
        assert_refused(ask(providers, proxy.url))  # no credentials
        secrets.put("prom-auth", {"token": "not-the-token"})
        assert_refused(ask(providers, proxy.url, bearerTokenFrom=ref("token")), "not-the-token")
        secrets.put("prom-auth", {"token": TOKEN + "\n"})
        assert_data(ask(providers, proxy.url, bearerTokenFrom=ref("token")))

        # The token is rotated: the proxy wants the new one, and the Secret follows.
        proxy.expected = authproxy.bearer(ROTATED)
        assert_refused(ask(providers, proxy.url, bearerTokenFrom=ref("token")), TOKEN)
        secrets.put("prom-auth", {"token": ROTATED})
        assert_data(ask(providers, proxy.url, bearerTokenFrom=ref("token")))
        assert proxy.accepted == 2 and proxy.refused == 3


def test_basic_auth_from_a_secret(
    prometheus: PrometheusServer, secrets: Secrets, providers: Providers
) -> None:
    with authproxy.AuthProxy(prometheus.url, authproxy.basic("modelrollout", PASSWORD)) as proxy:
        secrets.put("prom-auth", {"user": "modelrollout", "password": PASSWORD + "\n", "token": PASSWORD})
        literal = {"username": "modelrollout", "passwordFrom": ref("password")}
        assert_data(ask(providers, proxy.url, basicAuth=literal))
        from_secret = {"usernameFrom": ref("user"), "passwordFrom": ref("password")}
        assert_data(ask(providers, proxy.url, basicAuth=from_secret))
        # The password as a bearer token, or with another user: refused.
        assert_refused(ask(providers, proxy.url, bearerTokenFrom=ref("token")), PASSWORD)
        other_user = {"username": "someone", "passwordFrom": ref("password")}
        assert_refused(ask(providers, proxy.url, basicAuth=other_user), PASSWORD)


def test_a_missing_secret_is_an_error_naming_it(
    prometheus: PrometheusServer, secrets: Secrets, providers: Providers
) -> None:
    with authproxy.AuthProxy(prometheus.url, authproxy.bearer(TOKEN)) as proxy:
        result = ask(providers, proxy.url, bearerTokenFrom=ref("token"))
        assert result == QueryResult(
            QueryOutcome.ERROR, detail="spec.prometheus.bearerTokenFrom: Secret ml/prom-auth not found"
        )
        assert proxy.accepted == proxy.refused == 0, "nothing was sent without the credentials"


def test_https_with_a_ca_from_a_secret(
    prometheus: PrometheusServer,
    secrets: Secrets,
    providers: Providers,
    tls: authproxy.TLSFiles,
    tmp_path: Path,
) -> None:
    other = authproxy.make_tls(tmp_path / "other")
    secrets.put("prom-auth", {"token": TOKEN, "ca.crt": tls.ca_pem, "other.crt": other.ca_pem})
    with authproxy.AuthProxy(prometheus.url, authproxy.bearer(TOKEN), tls=tls) as proxy:
        assert proxy.url.startswith("https://127.0.0.1:")
        untrusted = ask(providers, proxy.url, bearerTokenFrom=ref("token"))
        assert (
            untrusted.outcome is QueryOutcome.UNREACHABLE and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
        )
        wrong_ca = ask(
            providers, proxy.url, bearerTokenFrom=ref("token"), tlsConfig={"caFrom": ref("other.crt")}
        )
        assert wrong_ca.outcome is QueryOutcome.UNREACHABLE and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.detail
        assert proxy.accepted == proxy.refused == 0, "no request got past the handshake"

        trusted = {"tlsConfig": {"caFrom": ref("ca.crt")}}
        assert_data(ask(providers, proxy.url, bearerTokenFrom=ref("token"), **trusted))
        assert_refused(ask(providers, proxy.url, **trusted))  # TLS alone is no authentication
        with pytest.warns(InsecureRequestWarning):  # urllib3 says so, once per call site
            skipped = ask(
                providers, proxy.url, bearerTokenFrom=ref("token"), tlsConfig={"insecureSkipVerify": True}
            )
        assert_data(skipped)


def test_the_operators_files_for_its_default_prometheus_only(
    prometheus: PrometheusServer, tls: authproxy.TLSFiles, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    with (
        authproxy.AuthProxy(prometheus.url, authproxy.bearer(TOKEN), tls=tls) as default,
        authproxy.AuthProxy(prometheus.url, authproxy.bearer(TOKEN), tls=tls) as elsewhere,
    ):
        operator = OperatorCredentials(bearer_token_file=str(tmp_path / "token"), ca_file=str(tls.ca))
        providers = Providers(Secrets(), operator, default.url)
        try:
            assert_data(ask(providers, default.url))
            # An address named in a spec gets neither the operator's token nor its CA.
            assert ask(providers, elsewhere.url).outcome is QueryOutcome.UNREACHABLE
            assert elsewhere.accepted == elsewhere.refused == 0

            # The mounted Secret is updated (kubelet swaps the file): the next query uses the new token.
            default.expected = authproxy.bearer(ROTATED)
            (tmp_path / "token").write_text(ROTATED)
            assert_data(ask(providers, default.url))
        finally:
            providers.close()
