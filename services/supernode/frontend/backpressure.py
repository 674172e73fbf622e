"""What the frontend learns from the router's refusals, so that overload is shed at the HTTP door.

A router that refuses (HTTP 429 from a RESOURCE_EXHAUSTED) says it is full at the frontend's current
number of requests in flight. For the refusal's Retry-After, requests that arrive while the frontend
has at least that many in flight are refused at the door (429, `reason="backend_full"`) without
reading their bodies or calling the router: under a burst the router's refusals would otherwise cost
the frontend and the router about as much work as serving, and delay the admitted requests' first
tokens. Once requests finish and the count drops, new ones reach the router again; when the window
ends, the next refusal (if any) sets a new one. A refusal while no other request of this frontend
was in flight says nothing about the load it can carry (the router is full with other clients'
work, or refused that one request) and teaches nothing.
"""

from __future__ import annotations

import time


class BackendLimit:
    def __init__(self, default_window_s: float = 1.0) -> None:
        self.default_window_s = default_window_s
        self.limit = 0  # in flight at the frontend when the router last refused (0 = none known)
        self.until = 0.0  # monotonic time the limit holds until

    def on_refused(self, num_inflight: int, retry_after_s: float | None) -> None:
        """The router refused a request while `num_inflight` (that one included) were in flight."""
        if num_inflight < 2:
            return
        self.limit = num_inflight - 1
        self.until = time.monotonic() + (retry_after_s or self.default_window_s)

    def is_full(self, num_inflight: int) -> bool:
        """Whether a request arriving with `num_inflight` already in flight should be refused."""
        return self.limit > 0 and num_inflight >= self.limit and time.monotonic() < self.until
