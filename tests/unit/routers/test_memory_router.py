"""The in-memory router: the TrafficRouter contract over dicts, with every write recorded."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from modelrollout import ports
from modelrollout.routers import istio_routes, memory

TARGET = ports.RouteTarget(
    experiment="churn-v2",
    namespace="ml",
    name="churn",
    routes=None,
    variants=(
        ports.Destination(workload="churn-v1", subset="v1"),
        ports.Destination(workload="churn-v2", subset="v2"),
    ),
)


def _vs() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {
            "hosts": ["churn"],
            "http": [
                {"name": "docs", "route": [{"destination": {"host": "docs"}}]},
                {"name": "primary", "route": [{"destination": {"host": "churn", "subset": "v1"}}]},
            ],
        },
    }


def _split(mirror: float | None = None, **weights: int) -> ports.TrafficSplit:
    renamed = {workload.replace("_", "-"): percent for workload, percent in weights.items()}
    return ports.TrafficSplit(routes=(ports.RouteWeights(route="primary", weights=renamed),), mirror=mirror)


def test_reconcile_adds_the_candidate_and_reports_the_split() -> None:
    router = memory.InMemoryRouter([_vs()])
    assert router.reconcile(TARGET) == _split(churn_v1=100, churn_v2=0)
    assert [w.operation for w in router.writes] == ["reconcile"]
    route = router.get("ml", "churn")["spec"]["http"][1]["route"]
    assert route[1] == {"destination": {"host": "churn", "subset": "v2"}, "weight": 0}


def test_set_routes_then_get_routes_reads_back_the_object() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(TARGET)
    assert router.set_routes(TARGET, {"churn-v1": 75, "churn-v2": 25}) == _split(churn_v1=75, churn_v2=25)
    assert router.get_routes(TARGET) == _split(churn_v1=75, churn_v2=25)
    assert router.get("ml", "churn")["spec"]["http"][0] == _vs()["spec"]["http"][0]


def test_weights_come_from_the_object_not_from_memory() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.set_routes(TARGET, {"churn-v1": 50, "churn-v2": 50})
    edited = router.get("ml", "churn")
    edited["spec"]["http"][1]["route"][0]["weight"] = 80
    edited["spec"]["http"][1]["route"][1]["weight"] = 20
    router.put(edited)  # a user's kubectl edit
    assert router.get_routes(TARGET) == _split(churn_v1=80, churn_v2=20)


def test_nothing_is_written_when_nothing_changes() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(TARGET)
    router.set_routes(TARGET, {"churn-v1": 95, "churn-v2": 5})
    writes = len(router.writes)
    router.reconcile(TARGET)
    router.set_routes(TARGET, {"churn-v1": 95, "churn-v2": 5})
    router.get_routes(TARGET)
    assert len(router.writes) == writes


def test_set_routes_works_without_a_prior_reconcile() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.set_routes(TARGET, {"churn-v1": 95, "churn-v2": 5})
    saved = istio_routes.saved_routes(router.get("ml", "churn"))
    assert saved == {"churn-v2": {"primary": [{"destination": {"host": "churn", "subset": "v1"}}]}}


def test_finalize_restores_the_original_and_forgets_it() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(TARGET)
    router.set_routes(TARGET, {"churn-v1": 25, "churn-v2": 75})
    router.finalize(TARGET)
    assert router.get("ml", "churn") == _vs()
    assert router.writes[-1].operation == "finalize"
    router.finalize(TARGET)  # twice is fine, and writes nothing
    assert [w.operation for w in router.writes] == ["reconcile", "set_routes", "finalize"]


def test_finalize_when_the_virtual_service_is_gone() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(TARGET)
    router.delete("ml", "churn")
    router.finalize(TARGET)
    with pytest.raises(ports.VirtualServiceNotFound, match="VirtualService ml/churn not found"):
        router.get_routes(TARGET)


def test_writes_are_snapshots() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(TARGET)
    first = copy.deepcopy(router.writes[0].virtual_service)
    router.set_routes(TARGET, {"churn-v1": 50, "churn-v2": 50})
    assert router.writes[0].virtual_service == first


def test_bad_weights_are_refused_before_any_write() -> None:
    router = memory.InMemoryRouter([_vs()])
    with pytest.raises(ValueError, match="sum to 100"):
        router.set_routes(TARGET, {"churn-v1": 90, "churn-v2": 5})
    with pytest.raises(ValueError, match="unknown workload"):
        router.set_routes(TARGET, {"churn-v1": 90, "churn-v9": 10})
    assert router.writes == []


def test_routing_errors_surface_as_router_errors() -> None:
    vs = _vs()
    vs["spec"]["http"].pop()
    router = memory.InMemoryRouter([vs])
    with pytest.raises(ports.RouteNotFound):
        router.reconcile(TARGET)


def test_fail_next_raises_once() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.fail_next(ports.RouterConflict("busy"))
    with pytest.raises(ports.RouterConflict, match="busy"):
        router.reconcile(TARGET)
    assert router.reconcile(TARGET) == _split(churn_v1=100, churn_v2=0)


def test_it_is_a_traffic_router() -> None:
    router: ports.TrafficRouter = memory.InMemoryRouter()
    with pytest.raises(ports.VirtualServiceNotFound):
        router.get_routes(TARGET)


def test_a_sticky_ab_test_inserts_routes_while_running_and_removes_them() -> None:
    sticky = dataclasses.replace(TARGET, sticky=ports.Stickiness(cookie="mexp-churn-v2", max_age_seconds=60))
    inserted = [
        "mexp-churn-v2-primary-churn-v1",
        "mexp-churn-v2-primary-churn-v2",
        "mexp-churn-v2-primary-assign",
    ]
    router = memory.InMemoryRouter([_vs()])

    def names() -> list[str]:
        return [route.get("name") for route in router.get("ml", "churn")["spec"]["http"]]

    assert router.reconcile(sticky) == _split(churn_v1=100, churn_v2=0)
    assert router.set_routes(sticky, {"churn-v1": 70, "churn-v2": 30}) == _split(churn_v1=70, churn_v2=30)
    assert names() == ["docs", *inserted, "primary"]
    assert router.get_routes(sticky) == _split(churn_v1=70, churn_v2=30)
    writes = len(router.writes)
    router.reconcile(sticky)
    router.set_routes(sticky, {"churn-v1": 70, "churn-v2": 30})
    assert len(router.writes) == writes

    edited = router.get("ml", "churn")
    del edited["spec"]["http"][3]  # a user deletes the assign route
    router.put(edited)
    assert router.get_routes(sticky) == _split(churn_v1=100, churn_v2=0)  # read from the object
    router.set_routes(sticky, {"churn-v1": 70, "churn-v2": 30})
    assert names() == ["docs", *inserted, "primary"]

    assert router.set_routes(sticky, {"churn-v1": 0, "churn-v2": 100}) == _split(churn_v1=0, churn_v2=100)
    assert names() == ["docs", "primary"]
    router.finalize(sticky)
    assert router.get("ml", "churn") == _vs()


def test_a_shadow_phase_then_a_canary_then_finalize() -> None:
    shadow = dataclasses.replace(TARGET, mirror_percent=50.0)
    router = memory.InMemoryRouter([_vs()])
    assert router.get_mirror(TARGET) is None
    assert router.reconcile(shadow) == _split(churn_v1=100, churn_v2=0, mirror=50.0)
    primary = router.get("ml", "churn")["spec"]["http"][1]
    assert primary["mirror"] == {"host": "churn", "subset": "v2"}
    assert primary["mirrorPercentage"] == {"value": 50.0}
    assert router.get_mirror(shadow) == 50.0
    assert router.get("ml", "churn")["spec"]["http"][0] == _vs()["spec"]["http"][0]
    writes = len(router.writes)
    router.reconcile(shadow)
    router.set_routes(shadow, {"churn-v1": 100, "churn-v2": 0})
    assert len(router.writes) == writes  # nothing changes, nothing is written

    edited = router.get("ml", "churn")
    del edited["spec"]["http"][1]["mirror"]  # drift: a user removes the mirror
    router.put(edited)
    assert router.get_mirror(shadow) is None  # read from the object
    router.reconcile(shadow)
    assert router.get_mirror(shadow) == 50.0  # and it comes back

    assert router.set_routes(TARGET, {"churn-v1": 80, "churn-v2": 20}) == _split(churn_v1=80, churn_v2=20)
    assert router.get_mirror(TARGET) is None
    assert "mirror" not in router.get("ml", "churn")["spec"]["http"][1]
    router.finalize(TARGET)
    assert router.get("ml", "churn") == _vs()
    assert [w.operation for w in router.writes] == ["reconcile", "reconcile", "set_routes", "finalize"]


def test_finalize_during_the_shadow_phase_removes_the_mirror() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(dataclasses.replace(TARGET, mirror_percent=100))
    router.finalize(TARGET)
    assert router.get("ml", "churn") == _vs()


def test_a_users_mirror_is_never_overwritten() -> None:
    vs = _vs()
    vs["spec"]["http"][1]["mirror"] = {"host": "audit"}
    router = memory.InMemoryRouter([vs])
    with pytest.raises(ports.RouterError, match=r"primary of VirtualService ml/churn .* \(field mirror\)"):
        router.reconcile(dataclasses.replace(TARGET, mirror_percent=10))
    assert router.writes == []
    router.reconcile(TARGET)  # without a mirror of its own, the experiment leaves the user's alone
    assert router.get("ml", "churn")["spec"]["http"][1]["mirror"] == {"host": "audit"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mirror_percent": 0}, "0 < percent <= 100"),
        ({"mirror_percent": 100.5}, "0 < percent <= 100"),
        ({"mirror_percent": float("nan")}, "0 < percent <= 100"),
        ({"mirror_percent": True}, "0 < percent <= 100"),
        ({"mirror_percent": 50, "variants": TARGET.variants[:1]}, "needs a candidate"),
        (
            {"mirror_percent": 50, "sticky": ports.Stickiness(cookie="c", max_age_seconds=60)},
            "A/B test with sticky routing cannot mirror",
        ),
    ],
)
def test_a_bad_mirror_is_refused(fields: dict[str, Any], message: str) -> None:
    router = memory.InMemoryRouter([_vs()])
    with pytest.raises(ValueError, match=message):
        router.reconcile(dataclasses.replace(TARGET, **fields))
    assert router.writes == []


def test_a_sticky_target_without_mirror_still_removes_the_experiments_mirror() -> None:
    router = memory.InMemoryRouter([_vs()])
    router.reconcile(dataclasses.replace(TARGET, mirror_percent=20))
    sticky = dataclasses.replace(TARGET, sticky=ports.Stickiness(cookie="mexp-churn-v2", max_age_seconds=60))
    router.set_routes(sticky, {"churn-v1": 50, "churn-v2": 50})
    http = router.get("ml", "churn")["spec"]["http"]
    assert not any("mirror" in route for route in http)  # nor copied into the inserted routes
    assert router.get_mirror(sticky) is None
    router.finalize(sticky)
    assert router.get("ml", "churn") == _vs()
