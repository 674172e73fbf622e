"""One iteration of the virtual-time loop: asyncio's `BaseEventLoop._run_once`, minus its costs that
a simulation never needs.

The order of everything is asyncio's: drop cancelled timers (all of them once they are too many,
else those at the head of the heap), work out how long to wait, take every timer due within the
clock's resolution onto the ready queue, then run the callbacks that were ready when the iteration
began. What differs: the selector is polled only when something besides the loop's self-pipe is
registered (a poll that cannot return events costs two system calls' worth of Python), the wait
moves the virtual clock here instead of through the selector wrapper, and the debug-mode timing of
slow callbacks is left out (a virtual-time loop never runs in debug mode: its callbacks take no
emulated time).
"""

from __future__ import annotations

import heapq
import selectors
from typing import Any

# asyncio's own thresholds (base_events), so cancelled timers are purged exactly when asyncio would.
MIN_SCHEDULED_TIMER_HANDLES = 100
MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5
MAXIMUM_SELECT_TIMEOUT = 24 * 3600


def lean_iteration(loop: Any, selector: selectors.BaseSelector) -> None:
    """Runs one iteration of `loop` (a VirtualTimeLoop; `selector` its real selector)."""
    scheduled = loop._scheduled
    sched_count = len(scheduled)
    if (
        sched_count > MIN_SCHEDULED_TIMER_HANDLES
        and loop._timer_cancelled_count / sched_count > MIN_CANCELLED_TIMER_HANDLES_FRACTION
    ):
        kept = []
        for handle in scheduled:
            if handle._cancelled:
                handle._scheduled = False
            else:
                kept.append(handle)
        heapq.heapify(kept)
        loop._scheduled = scheduled = kept
        loop._timer_cancelled_count = 0
    else:
        while scheduled and scheduled[0]._cancelled:
            loop._timer_cancelled_count -= 1
            handle = heapq.heappop(scheduled)
            handle._scheduled = False

    ready = loop._ready
    timeout: float | None = None
    if ready or loop._stopping:
        timeout = 0
    elif scheduled:
        timeout = min(max(0, scheduled[0]._when - loop.virtual_s), MAXIMUM_SELECT_TIMEOUT)

    # Only the loop's self-pipe registered: nothing to poll (a thread's call_soon_threadsafe puts its
    # callback on the ready queue itself; the pipe only wakes a blocking select).
    events = selector.select(0) if len(selector.get_map()) > 1 else None
    if not events and timeout != 0:  # nothing to do now: time jumps to the next timer
        if timeout is None:
            raise RuntimeError("simulation stuck: every task waits and no timer is set")
        loop.virtual_s += timeout
    if events:
        loop._process_events(events)

    end_time = loop.virtual_s + loop._clock_resolution
    while scheduled:
        handle = scheduled[0]
        if handle._when >= end_time:
            break
        handle = heapq.heappop(scheduled)
        handle._scheduled = False
        ready.append(handle)

    popleft = ready.popleft
    for _ in range(len(ready)):
        handle = popleft()
        if not handle._cancelled:
            handle._run()
    handle = None  # breaks a cycle through the traceback when a callback raised
