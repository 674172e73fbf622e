"""Fail-stop supervision of a worker's step loop (runtime/engine.py).

When the loop stops on an error (a bug in `schedule`, `price` or `postprocess`), the worker:
1. fails every request it holds (waiting, in a batch, streaming, reserved) with UNAVAILABLE
   `<role> worker stopped: its step loop failed; retry on another instance` (no exception text reaches
   a client; the log has the traceback), so no caller waits on a loop that will never step again;
2. refuses new work with the same error (the router skips it: the error comes from the service, and
   its load report says `draining`);
3. tells its listeners, the service host among them, which turns gRPC health NOT_SERVING;
4. counts it: `supernode_<role>_step_failures_total{worker,stage}`, and `supernode_<role>_serving`
   drops from 1 to 0.
The process stays up (health, metrics and logs remain readable) until it is restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from supernode.core.request import Request, RequestStatus
from supernode.runtime.engine import StepFailure
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, role: str, worker_id: str, registry: CollectorRegistry) -> None:
        self.role = role
        self.worker_id = worker_id
        self.failure: StepFailure | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._failures = Counter(
            f"supernode_{role}_step_failures", "Step loops stopped by an error, by stage",
            ("worker", "stage"), registry=registry,
        )  # fmt: skip
        serving = Gauge(
            f"supernode_{role}_serving", "1 while the step loop runs; 0 once it stopped on an error",
            ("worker",), registry=registry,
        )  # fmt: skip
        self._serving = serving.labels(worker_id)
        self._serving.set(1)

    @property
    def is_failed(self) -> bool:
        return self.failure is not None

    def on_fault(self, listener: Callable[[str], None]) -> None:
        """`listener(reason)` is called once, when the loop fails (the service host: NOT_SERVING)."""
        self._listeners.append(listener)

    def error(self) -> UnavailableError:
        """What a caller of a failed worker gets."""
        return UnavailableError(
            f"{self.role} worker stopped: its step loop failed; retry on another instance",
            retry_after_s=1.0,
        )

    def check(self) -> None:
        """Raises the worker's error once its loop has failed (new work must not queue behind it)."""
        if self.failure is not None:
            raise self.error()

    def trip(self, failure: StepFailure, requests: Iterable[Request]) -> int:
        """Records `failure`, fails `requests` (their sinks hear `on_done` with status FAILED) and
        tells the listeners; returns how many requests it failed."""
        if self.failure is not None:
            return 0
        self.failure = failure
        self._failures.labels(self.worker_id, failure.stage).inc()
        self._serving.set(0)
        message = self.error().message
        num_failed = 0
        for request in requests:
            if request.is_done:
                continue
            request.end(RequestStatus.FAILED, message)
            num_failed += 1
            if request.sink is not None:
                request.sink.on_done(request)
        log.error(
            "%s: step loop failed in %s (%s); %d requests failed; reporting NOT_SERVING",
            self.worker_id, failure.stage, failure.error, num_failed,
        )  # fmt: skip
        for listener in self._listeners:
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - one listener's bug must not keep the others unaware
                log.exception("%s: a step-failure listener failed", self.worker_id)
        return num_failed
