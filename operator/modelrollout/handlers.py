"""Every kopf decorator of the operator, each a one-line call into real code.

Importing this module registers the handlers; ``modelrollout run`` does so
and then hands control to kopf.  Nothing else imports kopf's decorators.
"""

from __future__ import annotations

from typing import Any

import kopf

from modelrollout import GROUP, PLURAL, VERSION, runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime.configure_kopf(settings)
    memo.runtime.start()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    return memo.runtime.connection_info()  # type: ignore[no-any-return]


# With peering, a replica can act for a moment and then be paused: two replicas starting together
# both see themselves alone at first, and a replica that outranks the active one takes over while
# the latter may still be finishing a tick.  A replica that resumed waits this long before its first
# tick; kopf cancels the wait (and the daemon) when it pauses the replica again.
PEERING_SETTLE = 2.0


def _settle(memo: kopf.Memo, **_: Any) -> float:
    return float(memo.get("settle", 0.0))


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=2.0, initial_delay=_settle)
async def experiment(name: str, namespace: str | None, uid: str, memo: Any, logger: Any, **_: Any) -> None:
    await memo.runtime.run_experiment(namespace, name, uid, logger)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def noticed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.notice(body)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    logger.info(memo.runtime.reconciler.finalize(body))
