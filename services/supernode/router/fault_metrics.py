"""The router's fault metrics and log lines: migrations, abandoned calls, deadline expiries, instance
health and fabric faults. On the default registry, which the router's metrics port serves."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

log = logging.getLogger("supernode.router.faults")

MIGRATIONS = Counter(
    "supernode_router_migrations",
    "Requests moved to another decode instance after a failure (reason: what broke).",
    ("reason",),
)
MIGRATIONS_REFUSED = Counter(
    "supernode_router_migrations_refused",
    "Broken requests not moved (limit: the per-request bound; untracked: no tokens to resume from).",
    ("reason",),
)
CALL_FAILURES = Counter(
    "supernode_router_call_failures",
    "Router calls to workers that failed or were given up (call: reserve, prefill, decode).",
    ("call", "reason"),
)
DEADLINE_EXPIRED = Counter(
    "supernode_router_deadline_expired",
    "Router calls given up at their deadline, and requests that ran out of their own (call: request).",
    ("call",),
)
INSTANCE_HEALTHY = Gauge(
    "supernode_router_instance_healthy",
    "1 while the instance answers the router's probes.",
    ("role", "address"),
)
INSTANCE_DOWN = Counter(
    "supernode_router_instance_unhealthy",
    "Times the router marked the instance unhealthy.",
    ("role", "address"),
)
BEHIND_FAULT = Gauge(
    "supernode_router_instance_behind_fault",
    "1 while a fabric fault holds a link of the instance's dies down (the router routes around it).",
    ("role", "address"),
)


def reason_of(err: Exception) -> str:
    """A short label for what broke: an abandoned call's reason, else the error's gRPC code."""
    reason = getattr(err, "reason", "")
    if reason:
        return str(reason)
    code = getattr(err, "code", "")
    return str(code).lower() or "error"


def on_call_failed(call: str, address: str, err: Exception) -> None:
    reason = reason_of(err)
    CALL_FAILURES.labels(call, reason).inc()
    if reason == "deadline":
        DEADLINE_EXPIRED.labels(call).inc()
    log.warning("%s on %s failed (%s): %s", call, address, reason, getattr(err, "message", err))


def on_migration(request_id: str, address: str, err: Exception, num_tokens: int, num: int) -> None:
    reason = reason_of(err)
    MIGRATIONS.labels(reason).inc()
    log.warning(
        "migrating %s off %s (%s) after %d tokens: migration %d", request_id, address, reason, num_tokens, num
    )


def on_migration_refused(request_id: str, reason: str, err: Exception) -> None:
    MIGRATIONS_REFUSED.labels(reason).inc()
    log.warning("not migrating %s (%s): %s", request_id, reason, getattr(err, "message", err))


def on_request_deadline(request_id: str) -> None:
    DEADLINE_EXPIRED.labels("request").inc()
    log.warning("request %s ran out of its deadline", request_id)


def on_health(role: str, address: str, is_healthy: bool, detail: str) -> None:
    INSTANCE_HEALTHY.labels(role, address).set(1 if is_healthy else 0)
    if is_healthy:
        log.info("%s %s healthy again", role, address)
    else:
        INSTANCE_DOWN.labels(role, address).inc()
        log.warning("%s %s marked unhealthy: %s", role, address, detail)


def on_fault(role: str, address: str, is_behind: bool) -> None:
    BEHIND_FAULT.labels(role, address).set(1 if is_behind else 0)
    if is_behind:
        log.warning("%s %s is behind a fabric fault: routing around it", role, address)
    else:
        log.info("%s %s is no longer behind a fabric fault", role, address)
