"""Suite-wide switches: tests that need a real cluster run only when asked to."""

from __future__ import annotations

import os

import pytest

CLUSTER_ENV = "MODELROLLOUT_CLUSTER_TESTS"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(CLUSTER_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"needs a kind cluster with Istio (see README); set {CLUSTER_ENV}=1")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
