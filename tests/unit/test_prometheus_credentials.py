"""Prometheus credentials: the spec fields, resolving them (fake Secrets, real files), the provider cache.

Every value below is distinctive, so "the value appears nowhere" is a plain
substring check on messages, reprs and logs.
"""

from __future__ import annotations

import base64
import copy
import datetime
import gc
import logging
import ssl
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from modelrollout import ports, reconciler, spec, webhooks
from modelrollout.localstack import authproxy
from modelrollout.prometheus_auth import (
    CredentialError,
    OperatorCredentials,
    Providers,
    Unavailable,
    resolve,
    source_of,
)
from modelrollout.providers.scripted import ScriptedProvider
from modelrollout.routers.memory import InMemoryRouter

NS = "ml"
TOKEN = "tok-3f9a1c7e-never-shown"
ROTATED = "tok-8b2d44a0-also-never-shown"
PASSWORD = "pw 5e1d-never shown"  # a space inside a password is kept
KEY = b"k" * 32
DEFAULT_URL = "http://prometheus.monitoring:9090"
OTHER_URL = "http://prometheus.elsewhere:9090"

REF = {"secretKeyRef": {"name": "prom-auth", "key": "token"}}


def ref(name: str = "prom-auth", key: str = "token") -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def settings(**fields: Any) -> spec.PrometheusSpec:
    return spec.PrometheusSpec.model_validate(fields)


class FakeSecrets:
    """Secrets as the API holds them (base64 ``data``), read the way kube.KubeSecrets reads them."""

    def __init__(self, secrets: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        for (namespace, name), values in (secrets or {}).items():
            self.put(namespace, name, values)
        self.reads = 0

    def put(self, namespace: str, name: str, values: Mapping[str, str]) -> None:
        self.data[namespace, name] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}

    def read(self, namespace: str, name: str, key: str) -> str:
        self.reads += 1
        if (namespace, name) not in self.data:
            raise webhooks.SecretError(f"Secret {namespace}/{name} not found")
        return webhooks.decode_secret_value(self.data[namespace, name], f"{namespace}/{name}", key)


class Built(ScriptedProvider):
    """What the cache built, with what; closable like PrometheusProvider."""

    def __init__(self, url: str, timeout: float, headers: Mapping[str, str], verify: bool | str) -> None:
        super().__init__({}, default=ports.QueryResult(ports.QueryOutcome.OK, 1.0))
        self.url, self.timeout, self.headers, self.verify = url, timeout, dict(headers), verify
        self.closed = False
        self.ca_text = Path(verify).read_text() if isinstance(verify, str) else None

    def close(self) -> None:
        self.closed = True


def cache(secrets: FakeSecrets, operator: OperatorCredentials | None = None) -> tuple[Providers, list[Built]]:
    built: list[Built] = []

    def build(url: str, timeout: float, headers: Mapping[str, str], verify: bool | str) -> Built:
        built.append(Built(url, timeout, headers, verify))
        return built[-1]

    return Providers(secrets, operator, DEFAULT_URL, build=build), built


def basic_of(header: str) -> str:
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode()


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real self-signed CA certificate (PEM), made with the openssl command."""
    try:
        return authproxy.make_tls(tmp_path_factory.mktemp("tls")).ca_pem
    except authproxy.OpensslNotFound as e:
        pytest.skip(str(e))


# --------------------------------------------------------------------------- the spec


def test_spec_takes_each_kind_of_credential() -> None:
    bearer = settings(bearerTokenFrom=REF, tlsConfig={"caFrom": ref(key="ca.crt")})
    assert bearer.bearer_token_from is not None and bearer.bearer_token_from.secret_key_ref.key == "token"
    assert bearer.tls_config is not None and bearer.tls_config.ca_from is not None
    literal = settings(basicAuth={"username": "modelrollout", "passwordFrom": ref(key="password")})
    assert literal.basic_auth is not None and literal.basic_auth.username == "modelrollout"
    from_secret = settings(basicAuth={"usernameFrom": ref(key="user"), "passwordFrom": ref(key="password")})
    assert from_secret.basic_auth is not None and from_secret.basic_auth.username_from is not None
    assert settings(tlsConfig={"insecureSkipVerify": True}).tls_config == spec.TLSConfig(
        insecure_skip_verify=True
    )
    assert settings() == spec.PrometheusSpec()  # nothing is required


@pytest.mark.parametrize(
    ("prometheus", "path", "says"),
    [
        ({"bearerTokenFrom": REF, "basicAuth": {"username": "u", "passwordFrom": REF}},
         "spec.prometheus", "both bearerTokenFrom and basicAuth"),
        ({"basicAuth": {"passwordFrom": REF}}, "spec.prometheus.basicAuth", "exactly one of username"),
        ({"basicAuth": {"username": "u", "usernameFrom": REF, "passwordFrom": REF}},
         "spec.prometheus.basicAuth", "exactly one of username"),
        ({"basicAuth": {"username": "u"}}, "spec.prometheus.basicAuth.passwordFrom", "is required"),
        ({"basicAuth": {"username": "a:b", "passwordFrom": REF}},
         "spec.prometheus.basicAuth.username", "without ':'"),
        ({"tlsConfig": {"caFrom": REF, "insecureSkipVerify": True}}, "spec.prometheus.tlsConfig", "both"),
        ({"bearerTokenFrom": {"secretKeyRef": {"name": "Prom_Auth", "key": "token"}}},
         "spec.prometheus.bearerTokenFrom.secretKeyRef.name", "Secret name"),
        ({"bearerToken": "x"}, "spec.prometheus.bearerToken", "is not a field"),
    ],
)  # fmt: skip
def test_spec_refuses_contradictory_or_incomplete_credentials(
    prometheus: dict[str, Any], path: str, says: str
) -> None:
    raw = {
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": "churn-v1"},
        "candidate": {"subset": "v2", "workload": "churn-v2"},
        "prometheus": prometheus,
    }
    with pytest.raises(spec.SpecError) as caught:
        spec.parse_spec(raw)
    assert any(p.path == path and says in p.message for p in caught.value.problems), caught.value.problems


# --------------------------------------------------------------------------- resolving


def test_bearer_token_from_a_secret_loses_its_trailing_newline() -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": TOKEN + "\n"}})
    credentials = resolve(settings(bearerTokenFrom=REF), NS, secrets, None, KEY)
    assert dict(credentials.headers) == {"Authorization": f"Bearer {TOKEN}"}
    assert credentials.ca_pem is None and credentials.ca_file is None and not credentials.insecure_skip_verify


def test_basic_auth_with_a_literal_or_secret_username() -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"user": "grafana\n", "password": PASSWORD + "\n"}})
    literal = settings(basicAuth={"username": "modelrollout", "passwordFrom": ref(key="password")})
    header = resolve(literal, NS, secrets, None, KEY).headers["Authorization"]
    assert basic_of(header) == f"modelrollout:{PASSWORD}"
    from_secret = settings(basicAuth={"usernameFrom": ref(key="user"), "passwordFrom": ref(key="password")})
    assert (
        basic_of(resolve(from_secret, NS, secrets, None, KEY).headers["Authorization"])
        == f"grafana:{PASSWORD}"
    )


def test_a_ca_from_a_secret_is_checked_and_kept_for_a_file(ca_pem: str) -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"ca.crt": ca_pem, "junk": "not a certificate"}})
    credentials = resolve(settings(tlsConfig={"caFrom": ref(key="ca.crt")}), NS, secrets, None, KEY)
    assert credentials.ca_pem == ca_pem and credentials.headers == {}
    with pytest.raises(CredentialError) as caught:
        resolve(settings(tlsConfig={"caFrom": ref(key="junk")}), NS, secrets, None, KEY)
    assert str(caught.value) == (
        "spec.prometheus.tlsConfig.caFrom: Secret ml/prom-auth key junk holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----)"
    )
    broken = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    secrets.put(NS, "prom-auth", {"ca.crt": broken})
    with pytest.raises(CredentialError, match=r"key ca\.crt holds no valid PEM CA certificate"):
        resolve(settings(tlsConfig={"caFrom": ref(key="ca.crt")}), NS, secrets, None, KEY)


@pytest.mark.parametrize(
    ("prometheus", "stored", "message"),
    [
        ({"bearerTokenFrom": REF}, {}, "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth not found"),
        ({"bearerTokenFrom": REF}, {"tokn": TOKEN},
         "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth has no key token"),
        ({"bearerTokenFrom": REF}, {"token": " \n"},
         "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth key token is empty"),
        ({"bearerTokenFrom": REF}, {"token": f"{TOKEN} {TOKEN}"},
         "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth key token is no bearer token: "
         "it holds spaces, control or non-ASCII characters"),
        ({"bearerTokenFrom": REF}, {"token": f"{TOKEN}\r\nX-Injected: 1"}, "is no bearer token"),
        ({"basicAuth": {"username": "u", "passwordFrom": ref(key="password")}}, {"password": "\n"},
         "spec.prometheus.basicAuth.passwordFrom: Secret ml/prom-auth key password is empty"),
        ({"basicAuth": {"usernameFrom": ref(key="user"), "passwordFrom": ref(key="password")}},
         {"user": f"a:{TOKEN}", "password": PASSWORD},
         "spec.prometheus.basicAuth.usernameFrom: Secret ml/prom-auth key user is no basic-auth username: "
         "it holds ':' or control characters"),
        ({"basicAuth": {"username": "u", "passwordFrom": ref(key="password")}}, {"token": TOKEN},
         "spec.prometheus.basicAuth.passwordFrom: Secret ml/prom-auth has no key password"),
        ({"tlsConfig": {"caFrom": ref(key="ca.crt")}}, {"token": TOKEN},
         "spec.prometheus.tlsConfig.caFrom: Secret ml/prom-auth has no key ca.crt"),
    ],
    ids=lambda v: repr(v)[:40],
)  # fmt: skip
def test_errors_name_the_field_secret_and_key_never_the_value(
    prometheus: dict[str, Any], stored: dict[str, str], message: str
) -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): stored} if stored else {})
    with pytest.raises(CredentialError) as caught:
        resolve(settings(**prometheus), NS, secrets, None, KEY)
    text = str(caught.value)
    assert message in text
    for value in (TOKEN, PASSWORD, *stored.values()):
        if value.strip():
            assert value.strip() not in text


def test_an_undecodable_secret_value_is_named_not_shown() -> None:
    secrets = FakeSecrets()
    secrets.data[NS, "prom-auth"] = {"token": base64.b64encode(b"\xff\xfe" + TOKEN.encode()).decode()}
    with pytest.raises(CredentialError) as caught:
        resolve(settings(bearerTokenFrom=REF), NS, secrets, None, KEY)
    assert str(caught.value) == (
        "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth key token is not base64-encoded UTF-8"
    )


def test_credentials_show_no_value_in_their_repr_and_fingerprint() -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": TOKEN}})
    credentials = resolve(settings(bearerTokenFrom=REF), NS, secrets, None, KEY)
    assert TOKEN not in repr(credentials) and TOKEN not in credentials.fingerprint
    # Keyed: the same token under another process' key has another fingerprint.
    other = resolve(settings(bearerTokenFrom=REF), NS, secrets, None, b"o" * 32)
    assert other.fingerprint != credentials.fingerprint
    assert (
        resolve(settings(bearerTokenFrom=REF), NS, secrets, None, KEY).fingerprint == credentials.fingerprint
    )


# --------------------------------------------------------------------------- the operator's own files


@pytest.fixture
def files(tmp_path: Path, ca_pem: str) -> Path:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "ca.crt").write_text(ca_pem)
    return tmp_path


def test_operator_files_are_read_at_use(files: Path) -> None:
    operator = OperatorCredentials(bearer_token_file=str(files / "token"), ca_file=str(files / "ca.crt"))
    credentials = resolve(settings(), NS, FakeSecrets(), operator, KEY)
    assert dict(credentials.headers) == {"Authorization": f"Bearer {TOKEN}"}
    assert credentials.ca_file == str(files / "ca.crt") and credentials.ca_pem is None
    (files / "token").write_text(ROTATED)
    assert (
        resolve(settings(), NS, FakeSecrets(), operator, KEY).headers["Authorization"] == f"Bearer {ROTATED}"
    )

    basic = OperatorCredentials(username="modelrollout", password_file=str(files / "password"))
    header = resolve(settings(), NS, FakeSecrets(), basic, KEY).headers["Authorization"]
    assert basic_of(header) == f"modelrollout:{PASSWORD}"


def test_the_spec_overrides_the_operator_part_by_part(files: Path, ca_pem: str) -> None:
    operator = OperatorCredentials(bearer_token_file=str(files / "token"), ca_file=str(files / "ca.crt"))
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": ROTATED}})
    # The experiment's own token, the operator's CA (the default Prometheus' certificate).
    credentials = resolve(settings(bearerTokenFrom=REF), NS, secrets, operator, KEY)
    assert credentials.headers["Authorization"] == f"Bearer {ROTATED}" and credentials.ca_file is not None
    # Its own TLS settings replace the operator's.
    insecure = resolve(settings(tlsConfig={"insecureSkipVerify": True}), NS, secrets, operator, KEY)
    assert insecure.insecure_skip_verify and insecure.ca_file is None
    assert insecure.headers["Authorization"] == f"Bearer {TOKEN}"


def test_an_unreadable_operator_file_names_the_flag_and_path(files: Path) -> None:
    (files / "token").unlink()
    operator = OperatorCredentials(bearer_token_file=str(files / "token"))
    with pytest.raises(CredentialError) as caught:
        resolve(settings(), NS, FakeSecrets(), operator, KEY)
    assert str(caught.value) == (
        f"--prometheus-bearer-token-file {files / 'token'}: cannot read it (No such file or directory)"
    )
    (files / "ca.crt").write_text(TOKEN)
    with pytest.raises(CredentialError) as caught:
        resolve(settings(), NS, FakeSecrets(), OperatorCredentials(ca_file=str(files / "ca.crt")), KEY)
    assert "--prometheus-ca-file" in str(caught.value) and TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("operator", "problem"),
    [
        (OperatorCredentials(bearer_token_file="t", username="u", password_file="p"), "not both"),
        (OperatorCredentials(username="u"), "needs both"),
        (OperatorCredentials(password_file="p"), "needs both"),
        (OperatorCredentials(username="a:b", password_file="p"), "must not contain ':'"),
        (OperatorCredentials(ca_file="c", insecure_skip_verify=True), "contradict"),
    ],
)
def test_contradictory_operator_settings_are_refused(operator: OperatorCredentials, problem: str) -> None:
    assert any(problem in found for found in operator.problems())
    assert OperatorCredentials(bearer_token_file="t", ca_file="c").problems() == []


def test_the_run_command_refuses_them_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelrollout import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--prometheus-bearer-token-file", str(tmp_path / "missing")])
    assert exited.value.code == 2
    assert f"--prometheus-bearer-token-file {tmp_path / 'missing'}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "--prometheus-username", "u"])
    assert "needs both --prometheus-username and --prometheus-password-file" in capsys.readouterr().err


# --------------------------------------------------------------------------- the provider cache


def test_one_session_per_source_reused_until_a_secret_rotates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": TOKEN}})
    providers, built = cache(secrets)
    first = providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS)
    assert providers.provider(OTHER_URL + "/", settings(bearerTokenFrom=REF), NS) is first
    assert [(b.url, b.timeout, b.headers, b.verify) for b in built] == [
        (OTHER_URL, 10.0, {"Authorization": f"Bearer {TOKEN}"}, True)
    ]
    assert secrets.reads == 2  # read at every use: that is how a rotation is seen

    secrets.put(NS, "prom-auth", {"token": ROTATED})
    second = providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS)
    assert second is not first and built[1].headers == {"Authorization": f"Bearer {ROTATED}"}
    assert built[0].closed and not built[1].closed
    assert providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS) is second
    assert "Prometheus credentials changed (bearerTokenFrom=ml/prom-auth/token): new session" in caplog.text
    assert TOKEN not in caplog.text and ROTATED not in caplog.text


def test_sources_do_not_share_sessions() -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": TOKEN}, ("other", "prom-auth"): {"token": TOKEN}})
    providers, built = cache(secrets)
    for namespace, prometheus in [
        (NS, settings(bearerTokenFrom=REF)),
        ("other", settings(bearerTokenFrom=REF)),  # same names, another namespace's Secret
        (NS, settings()),  # no credentials at all
        (NS, settings(bearerTokenFrom=REF, timeout="3s")),
    ]:
        providers.provider(OTHER_URL, prometheus, namespace)
    assert len(built) == 4 and not any(b.closed for b in built)
    assert source_of(settings(bearerTokenFrom=REF), NS, None) == ("bearerTokenFrom=ml/prom-auth/token",)


def test_a_missing_secret_gives_a_provider_that_fails_every_query_saying_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = FakeSecrets({(NS, "prom-auth"): {"token": TOKEN}})
    providers, built = cache(secrets)
    working = providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS)

    del secrets.data[NS, "prom-auth"]
    failing = providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS)
    assert isinstance(failing, Unavailable)
    reason = "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth not found"
    assert failing.query("up") == ports.QueryResult(ports.QueryOutcome.ERROR, detail=reason)
    assert failing.query_series("up").outcome is ports.QueryOutcome.ERROR and not failing.is_online()
    assert built[0].closed, "the session holding the old token is dropped"
    # The same reason, the same provider (callers key caches by provider); logged once.
    assert providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS) is failing
    assert caplog.text.count(reason) == 1

    secrets.put(NS, "prom-auth", {"token": TOKEN})
    back = providers.provider(OTHER_URL, settings(bearerTokenFrom=REF), NS)
    assert back is not working and back is built[1] and built[1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text


def test_the_operator_credentials_go_to_the_default_prometheus_only(files: Path) -> None:
    operator = OperatorCredentials(bearer_token_file=str(files / "token"), ca_file=str(files / "ca.crt"))
    providers, built = cache(FakeSecrets(), operator)
    providers.provider(DEFAULT_URL, settings(), NS)
    providers.provider(OTHER_URL, settings(), NS)  # an address a spec names: not our token
    assert [(b.url, b.headers, b.verify) for b in built] == [
        (DEFAULT_URL, {"Authorization": f"Bearer {TOKEN}"}, str(files / "ca.crt")),
        (OTHER_URL, {}, True),
    ]
    # A rotated token file: a new session at the next use.
    (files / "token").write_text(ROTATED)
    providers.provider(DEFAULT_URL, settings(), NS)
    assert built[2].headers == {"Authorization": f"Bearer {ROTATED}"} and built[0].closed


def test_a_ca_from_a_secret_goes_to_a_private_file_replaced_on_rotation(ca_pem: str, tmp_path: Path) -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"ca.crt": ca_pem, "token": TOKEN}})
    providers, built = cache(secrets)
    tls = settings(bearerTokenFrom=REF, tlsConfig={"caFrom": ref(key="ca.crt")})
    providers.provider(OTHER_URL, tls, NS)
    path = Path(str(built[0].verify))
    assert path.read_text() == ca_pem == built[0].ca_text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert TOKEN not in path.read_text()

    # A rotated token keeps the CA file; a rotated CA replaces it.
    secrets.put(NS, "prom-auth", {"ca.crt": ca_pem, "token": ROTATED})
    providers.provider(OTHER_URL, tls, NS)
    assert built[1].verify == str(path) and path.exists()
    other_ca = authproxy.make_tls(tmp_path / "other").ca_pem
    secrets.put(NS, "prom-auth", {"ca.crt": other_ca, "token": ROTATED})
    providers.provider(OTHER_URL, tls, NS)
    assert built[2].ca_text == other_ca and built[2].verify != str(path) and not path.exists()
    ssl.create_default_context(cafile=str(built[2].verify))  # a CA bundle as requests will load it

    providers.close()
    assert not path.parent.exists() and all(b.closed for b in built)


def test_the_ca_directory_goes_with_the_cache(ca_pem: str) -> None:
    secrets = FakeSecrets({(NS, "prom-auth"): {"ca.crt": ca_pem}})
    providers, built = cache(secrets)
    providers.provider(OTHER_URL, settings(tlsConfig={"caFrom": ref(key="ca.crt")}), NS)
    folder = Path(str(built[0].verify)).parent
    del providers
    gc.collect()
    assert not folder.exists()


def test_insecure_skip_verify_turns_verification_off() -> None:
    providers, built = cache(FakeSecrets())
    providers.provider(OTHER_URL, settings(tlsConfig={"insecureSkipVerify": True}), NS)
    assert built[0].verify is False


# --------------------------------------------------------------------------- in a tick


def test_a_missing_secret_holds_the_experiment_saying_where_and_recovers_when_it_appears() -> None:
    """Through the real reconciler and core: no data (never a pass), status and Event name the Secret."""
    body = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "churn-v2", "namespace": NS, "uid": "u-1", "generation": 1, "annotations": {}},
        "spec": {
            "virtualService": {"name": "churn", "routes": ["primary"]},
            "baseline": {"subset": "v1", "workload": "churn-v1"},
            "candidate": {"subset": "v2", "workload": "churn-v2"},
            "prometheus": {"address": OTHER_URL, "bearerTokenFrom": REF},
            "canary": {"interval": "10s", "minSamples": 50},
            "metrics": [{"name": "up", "query": 'up{job="{{ workload }}"}', "max": 5}],
        },
    }
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": NS},
        "spec": {"hosts": ["churn"], "http": [
            {"name": "primary", "route": [{"destination": {"host": "churn", "subset": "v1"}}]},
        ]},
    }  # fmt: skip
    statuses: list[dict[str, Any]] = []
    events: list[tuple[str, str, str]] = []

    class Store:
        def get(self, namespace: str, name: str) -> dict[str, Any]:
            return copy.deepcopy(body)

        def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
            merged = {**body.get("status", {}), **status}
            body["status"] = {k: v for k, v in merged.items() if v is not None}
            statuses.append(copy.deepcopy(body["status"]))

    class Sink:
        def emit(self, type: ports.EventType, reason: str, message: str) -> None:
            events.append((type, reason, message))

    secrets = FakeSecrets()
    providers, built = cache(secrets)
    now = [datetime.datetime(2026, 11, 23, 10, tzinfo=datetime.UTC)]
    rec = reconciler.Reconciler(
        experiments=Store(),
        router=InMemoryRouter([vs]),
        providers=lambda prometheus, namespace: providers.provider(OTHER_URL, prometheus, namespace),
        events=lambda _: Sink(),
        clock=lambda: now[0],
    )

    def tick() -> None:
        rec.tick(NS, "churn-v2")
        now[0] += datetime.timedelta(seconds=10)

    tick()  # starts: step 1
    tick()  # the first evaluation: no credentials
    status = body["status"]
    where = "spec.prometheus.bearerTokenFrom: Secret ml/prom-auth not found"
    assert status["decision"] == "Hold" and status["reason"] == "NoData", status
    assert where in status["message"] and status["candidateWeight"] == 5
    assert any(reason == "NoData" and where in message for _, reason, message in events), events
    assert all(m["verdict"] != "Pass" for m in status["metrics"])
    assert built == []

    secrets.put(NS, "prom-auth", {"token": TOKEN})
    tick()
    assert [b.headers for b in built] == [{"Authorization": f"Bearer {TOKEN}"}]
    assert built[0].queries, "the next evaluation asked the Prometheus with the token"
    assert where not in body["status"]["message"]
    shown = repr(statuses) + repr(events)
    assert TOKEN not in shown
