"""gRPC's own retry policy for the calls that are safe to repeat, as channel options.

A call is retried only when repeating it cannot change anything: reads and probes (load reports,
status, health, pool look-ups and reads, fabric descriptions). Generate, Prefill, Decode, Reserve,
Put and Transfer are not idempotent and are never retried by the channel; their callers decide.
Only UNAVAILABLE is retried (the peer was not reached or was restarting), with gRPC's exponential
backoff; every attempt still runs under the caller's deadline.
"""

from __future__ import annotations

import json

# (service, method) pairs whose calls are idempotent.
IDEMPOTENT = (
    ("supernode.v1.Router", "Status"),
    ("supernode.v1.Prefill", "Load"),
    ("supernode.v1.Decode", "Load"),
    ("supernode.v1.Decode", "CancelReservation"),
    ("supernode.v1.KvPool", "Lookup"),
    ("supernode.v1.KvPool", "Get"),
    ("supernode.v1.KvPool", "Stats"),
    ("supernode.v1.Fabric", "Describe"),
    ("grpc.health.v1.Health", "Check"),
)
MAX_ATTEMPTS = 4
INITIAL_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


def service_config() -> str:
    """The JSON service config with a retry policy on every idempotent method."""
    policy = {
        "maxAttempts": MAX_ATTEMPTS,
        "initialBackoff": f"{INITIAL_BACKOFF_S}s",
        "maxBackoff": f"{MAX_BACKOFF_S}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": service, "method": method} for service, method in IDEMPOTENT]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def retry_options() -> list[tuple[str, object]]:
    """Channel options turning the policy on."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config())]
