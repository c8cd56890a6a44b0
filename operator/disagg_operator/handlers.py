"""The kopf handlers of the operator: thin wrappers around the reconcile logic.

`build_registry` returns a fresh kopf registry, so the `disagg operator`
command and each test run their own set of handlers with their own intervals.
The handlers:

- create, update and resume of a DisaggregatedDeployment reconcile it;
- a timer reconciles every resource each `resync_seconds` as a safety net;
- events of the child Deployments, Services and PodDisruptionBudgets (found by
  label) reconcile their parent, which repairs a child deleted or edited by
  hand and copies the child Deployments' replica counts into the status;
- a daemon per resource with `autoscaling.mode` builtin or external calls
  the autoscaler hook every `autoscaling.intervalSeconds` (external mode
  only reports queue depth in the status).

Autoscaler hook contract: a module `disagg_operator.autoscale` may define
`async def tick(*, kube, body, state, logger) -> None`. The daemon calls it
with the operator's `Kube`, the live resource body, a dict that persists
between the ticks of one resource, and kopf's per-object logger. Without that
module no daemon runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import constants as c
from .kube import Kube
from .reconcile import Reconciler

logger = logging.getLogger(__name__)

AUTOSCALE_MODULE = "disagg_operator.autoscale"


@dataclasses.dataclass(frozen=True)
class HandlerOptions:
    """Intervals of the periodic handlers, in seconds."""

    # Period of the safety-net reconcile of each resource; None runs none.
    resync_seconds: float | None = 60.0
    # Grace period for a daemon (the autoscaler loop) to exit when its resource goes.
    daemon_cancellation_seconds: float = 10.0
    # Whether events of the children trigger a reconcile of their parent; off
    # leaves drift repair to the resync timer alone.
    watch_children: bool = True
    # Whether to run the autoscaler hook daemon (when the hook module exists).
    autoscaler: bool = True


def _autoscaler_runs(spec: Mapping[str, Any], **_: Any) -> bool:
    mode = (spec.get("autoscaling") or {}).get("mode", c.DEFAULT_AUTOSCALING_MODE)
    return mode in (c.AUTOSCALING_BUILTIN, c.AUTOSCALING_EXTERNAL)


def _load_autoscaler() -> Any | None:
    """Return the autoscaler hook module, or None when it is not installed."""
    try:
        module = importlib.import_module(AUTOSCALE_MODULE)
    except ModuleNotFoundError as error:
        if error.name != AUTOSCALE_MODULE:
            raise
        return None
    return module if hasattr(module, "tick") else None


def build_registry(options: HandlerOptions | None = None) -> kopf.OperatorRegistry:
    """Return a registry with every handler of the operator."""
    options = options or HandlerOptions()
    registry = kopf.OperatorRegistry()
    resource = (c.GROUP, c.VERSION, c.PLURAL)
    # Children carry these labels; the handlers ignore every other object.
    child_labels = {c.LABEL_MANAGED_BY: c.MANAGER_NAME, c.LABEL_DEPLOYMENT: kopf.PRESENT}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The in-cluster service account first, else KUBECONFIG (or ~/.kube/config),
        # read at login time; the Kube client follows the same order.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # kopf keeps its handler progress and last-handled spec in annotations
        # of our group, because the CRD's status schema has no field for them.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=c.GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{c.GROUP}/kopf-finalizer"
        # The reconcile logic records its own events; kopf would post one per log line.
        settings.posting.enabled = False
        if getattr(memo, "kube", None) is None:
            memo.kube = Kube.from_environment()
        memo.reconciler = Reconciler(memo.kube)
        logger.info("operator started resync_seconds=%s", options.resync_seconds)

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        kube = getattr(memo, "kube", None)
        if kube is not None:
            kube.close()
        logger.info("operator stopped")

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def reconcile_resource(
        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        outcome = await memo.reconciler.reconcile(dict(body), logger)
        if outcome.problems:
            # Permanent: nothing changes until the next edit of the spec.
            raise kopf.PermanentError(
                "invalid spec: " + "; ".join(str(problem) for problem in outcome.problems)
            )

    async def resync(
        name: str, namespace: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        await memo.reconciler.reconcile_named(namespace, name, cause="resync", log=logger)

    if options.resync_seconds is not None:
        kopf.timer(
            *resource,
            registry=registry,
            id="resync",
            interval=options.resync_seconds,
            initial_delay=options.resync_seconds,
        )(resync)

    async def child_changed(
        event: Mapping[str, Any],
        body: kopf.Body,
        namespace: str,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        parent = body.get("metadata", {}).get("labels", {}).get(c.LABEL_DEPLOYMENT)
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if not parent or reconciler is None:
            return
        child = body.get("metadata", {}).get("name")
        cause = f"{event.get('type') or 'LISTED'} {body.get('kind')} {child}"
        try:
            await reconciler.reconcile_named(namespace, parent, cause=cause, log=logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            # Event handlers are not retried; the resync timer retries later.
            logger.warning("reconcile of parent=%s failed after %s: %s", parent, cause, error)

    child_resources = (
        ("apps", "v1", "deployments"),
        ("", "v1", "services"),
        ("policy", "v1", "poddisruptionbudgets"),
    )
    for group, version, plural in child_resources if options.watch_children else ():
        kopf.on.event(
            group,
            version,
            plural,
            registry=registry,
            labels=child_labels,
            id=f"child-{plural}",
        )(child_changed)

    autoscaler = _load_autoscaler() if options.autoscaler else None
    if autoscaler is None:
        logger.info("no autoscaler hook %s; autoscaling is off", AUTOSCALE_MODULE)
        return registry

    @kopf.daemon(
        *resource,
        registry=registry,
        when=_autoscaler_runs,
        cancellation_timeout=options.daemon_cancellation_seconds,
    )
    async def autoscale(
        body: kopf.Body,
        spec: kopf.Spec,
        memo: kopf.Memo,
        logger: kopf.Logger,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        state: dict[str, Any] = {}
        while not stopped:
            try:
                await autoscaler.tick(kube=memo.kube, body=body, state=state, logger=logger)
            except Exception:
                # One failed tick must not end the loop: the next one observes afresh.
                logger.exception("autoscaler tick failed; next tick as scheduled")
            interval = (spec.get("autoscaling") or {}).get(
                "intervalSeconds", c.DEFAULT_AUTOSCALING_INTERVAL_SECONDS
            )
            await stopped.wait(float(interval))

    return registry
