"""Plain records that cross the loadgen's module boundaries."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


def compact(token_ids: Sequence[int] | npt.NDArray[Any]) -> Sequence[int]:
    """Prompt tokens as 32-bit ints (4 bytes each rather than a tuple's 8 plus an int object per
    token), so a workload of 100,000 prompts fits in memory."""
    out = array("i")
    out.frombytes(np.asarray(token_ids, np.int32).tobytes())  # numpy converts a list much faster
    return out


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request the runner will send."""

    request_id: str  # unique within a run
    token_ids: Sequence[int]  # prompt tokens, `compact` (the SDK target sends them; HTTP their words)
    max_tokens: int  # output tokens asked for (ignore_eos is set, so exactly this many)
    arrival_s: float  # emulated seconds after the run starts (open loop); ignored in closed loop
    seed: int = 0  # sampling seed sent with the request
    session_id: str = ""  # conversation this request belongs to ("" = none)
    after: str = ""  # request id that must finish before this one is sent ("" = none)
    num_shared_tokens: int = 0  # leading prompt tokens the workload shares with an earlier request


@dataclass(slots=True)
class RequestResult:
    """What one request measured. Wall times are seconds after the run's start (perf_counter based)."""

    request_id: str
    is_ok: bool = False
    error_kind: str = ""  # gRPC status name (RESOURCE_EXHAUSTED, ...) or TIMEOUT / CONNECTION / HTTP_<n>
    error_message: str = ""
    scheduled_s: float = 0.0  # wall s: when the request was due (after any session dependency)
    sent_s: float = 0.0  # wall s: when it was sent
    first_token_s: float = 0.0  # wall s: when the first output token arrived (0 if none)
    done_s: float = 0.0  # wall s: when the stream ended (or failed)
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the KV pool
    has_cache_info: bool = False  # False when the target did not report cached tokens
    ttft_s: float = 0.0  # emulated seconds: time to first token
    tpot_s: float = 0.0  # emulated seconds: mean time per output token after the first
    e2e_s: float = 0.0  # emulated seconds: end-to-end latency
    itl_s: list[float] = field(default_factory=list)  # emulated seconds between consecutive chunks

    def rebase(self, t0: float) -> None:
        """Turn absolute perf_counter stamps into seconds after `t0`."""
        self.scheduled_s -= t0
        self.sent_s -= t0
        if self.first_token_s:
            self.first_token_s -= t0
        self.done_s -= t0
