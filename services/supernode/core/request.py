"""One record per request, with an explicit status; engines move it through its states, codecs translate.

    QUEUED --> PREFILLING --> TRANSFERRING --> DECODING --> FINISHED
       \\            \\              \\              \\
        +------------+--------------+--------------+--> FAILED | CANCELLED
    TRANSFERRING, DECODING --> PREFILLING     (recompute: the KV was lost, or its decode instance)

What each status means depends on the role holding the record (each role keeps its own record of a
request: the router's spans the whole path, a worker's its part of it):
- router: QUEUED waiting for decode capacity; PREFILLING on a prefill instance; TRANSFERRING while the
  decode instance pulls the KV; DECODING while tokens stream; then FINISHED, FAILED or CANCELLED.
- prefill worker: QUEUED from arrival until its first batch (cache lookup and load included);
  PREFILLING while its prompt is computed (one batch, or several when chunked); FINISHED.
- decode worker: QUEUED once reserved; TRANSFERRING while its KV is read and pulled over RDMA;
  DECODING in the continuous batch (waiting for a slot, then running); FINISHED.
A record never leaves a final status.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from supernode.core.tokens import TokenModel


class RequestStatus(enum.Enum):
    QUEUED = "queued"
    PREFILLING = "prefilling"
    TRANSFERRING = "transferring"
    DECODING = "decoding"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    # Members are singletons compared by identity, so they hash by identity too: Enum's own hash is
    # Python code (the name's hash), paid on every status check and transition of every request.
    __hash__ = object.__hash__

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({RequestStatus.FINISHED, RequestStatus.FAILED, RequestStatus.CANCELLED})
_ENDS = frozenset({RequestStatus.FAILED, RequestStatus.CANCELLED})
_NEXT: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.QUEUED: frozenset({RequestStatus.PREFILLING, RequestStatus.TRANSFERRING}) | _ENDS,
    RequestStatus.PREFILLING: frozenset({RequestStatus.TRANSFERRING, RequestStatus.FINISHED}) | _ENDS,
    RequestStatus.TRANSFERRING: frozenset({RequestStatus.DECODING, RequestStatus.PREFILLING}) | _ENDS,
    RequestStatus.DECODING: frozenset({RequestStatus.FINISHED, RequestStatus.PREFILLING}) | _ENDS,
    RequestStatus.FINISHED: frozenset(),
    RequestStatus.FAILED: frozenset(),
    RequestStatus.CANCELLED: frozenset(),
}


class StateError(ValueError):
    """A status change the lifecycle above does not allow (a bug in the engine that asked for it)."""


class TokenSink(Protocol):
    """Who hears about a request's progress inside an engine (a waiting caller, an output stream)."""

    def on_tokens(self, request: Request, token_ids: list[int], num_tokens: int) -> None:
        """A step emitted `num_tokens` tokens (`token_ids` empty when only counted)."""
        ...

    def on_done(self, request: Request) -> None:
        """The request reached a final status, or its role's part of it is done."""
        ...


@dataclass(frozen=True, slots=True)
class Sampling:
    seed: int = 0  # picks the deterministic output tokens and the MTP acceptance draws
    stop_token_ids: frozenset[int] = frozenset()  # generation stops after emitting one of these
    ignore_eos: bool = True  # False: the end-of-sequence token stops generation too
    min_tokens: int = 0  # output tokens before end-of-sequence may end the request
    eos_token_id: int = 0  # the tokenizer's end-of-sequence id (set by the router)
    eos_position: int = 0  # context index at which the model emits eos_token_id (0 = never)


# How decode says a prompt's KV cannot be pulled from its die (a FAILED_PRECONDITION message's start):
# the router then recomputes it on another prefill instance.
KV_UNREACHABLE = "kv: unreachable"


@dataclass(frozen=True, slots=True)
class KvHandle:
    """Where a prefilled prompt's KV lives: what decode needs to pull it."""

    request_id: str
    namespace: str  # the pool namespace holding the blocks
    block_keys: tuple[str, ...]  # prefix-chained keys of every prompt block, in order
    num_tokens: int  # prompt tokens the blocks cover
    nominal_bytes: int  # the KV's modelled size (bytes; drives the P->D transfer time)
    prefill_worker: str  # instance that computed it
    prefill_die: int  # die the KV sits on (global die index; the P->D transfer's source)
    block_tokens: int  # tokens per block


@dataclass(slots=True, eq=False)
class Request:
    request_id: str
    prompt: Sequence[int]  # prompt token ids (a list, or a 32-bit array('I') as the router keeps them)
    max_tokens: int  # output tokens in all, the prefill's first token included
    sampling: Sampling = Sampling()
    status: RequestStatus = RequestStatus.QUEUED
    arrival_s: float = 0.0  # emulated s when this role admitted the request

    # prefill
    num_cached_tokens: int = 0  # leading prompt tokens whose KV came from the context cache
    num_prefilled: int = 0  # prompt tokens computed so far beyond the cached prefix
    num_prefill_batches: int = 0  # batches the prompt took part in (> 1 when chunked)
    num_prefills: int = 0  # router: prefills run for it (2 after a recompute)
    num_migrations: int = 0  # router: times it moved to another decode instance after a failure
    first_token: int = -1  # the prefill's output token (-1 until known)
    kv: KvHandle | None = None  # set once prefilled
    num_question: int = 0  # prefill: an XL3M scoring job's trailing positions projected onto the
    # vocabulary (0 = an interactive prompt, which projects only its last position)

    # decode
    dp_rank: int = -1  # decode: the data-parallel rank (die) holding its KV; -1 before reservation
    num_kv_tokens: int = 0  # decode: KV tokens reserved on that rank (prompt + max_tokens)
    prompt_len: int = -1  # decode, counting only: prompt tokens its KV holds, their ids not read
    # (`prompt` left empty); -1: len(prompt)
    num_generated: int = 0  # output tokens so far, the prefill's first token included
    num_decode_steps: int = 0  # decode steps it took part in
    output: list[int] = field(default_factory=list)  # output token ids (empty when only counted)
    token_model: TokenModel | None = None  # decode: draws its next tokens; None = count only
    mtp_rng: random.Random | None = None  # decode: seeded per request, draws MTP acceptance
    token_plan: list[int] | None = None  # decode, counting only: tokens emitted after each step (cumulative)
    decode_start_step: int = 0  # decode, counting only: the scheduler step it joined its batch at
    expires_s: float = math.inf  # decode: emulated s after which an untaken reservation is released
    finish_reason: str = ""  # "length", "stop" or "cancelled"; "" while running
    error: str = ""  # why it failed (status FAILED)
    sink: TokenSink | None = None  # told of emitted tokens and completion (set by the engine holding it)

    # timing, emulated seconds
    first_token_s: float = 0.0  # instant the first token was produced
    finished_s: float = 0.0  # instant the last token was produced (or it ended)
    prefill_queue_s: float = 0.0  # waiting for a prefill batch
    prefill_compute_s: float = 0.0  # batches it took part in
    cache_load_s: float = 0.0  # loading its cached prefix from the pool over UB
    sent_s: float = 0.0  # instant the router sent it to prefill, a reservation granted at once
    # counted as instant (0: unknown); prefill counts it as arriving then, not when the host delivered it
    ready_s: float = 0.0  # prefill: instant it was ready to compute (sent + modelled cache load; 0: unset)
    kv_pull_s: float = 0.0  # the prefill -> decode RDMA pull
    prefill_worker: str = ""  # the instance that prefilled it
    decode_worker: str = ""  # the instance that decoded it

    @property
    def num_prompt_tokens(self) -> int:
        return self.prompt_len if self.prompt_len >= 0 else len(self.prompt)

    @property
    def num_prefill_remaining(self) -> int:
        """Prompt tokens still to compute (neither cached nor computed yet)."""
        return len(self.prompt) - self.num_cached_tokens - self.num_prefilled

    @property
    def kv_len(self) -> int:
        """Tokens whose KV the sequence holds: prompt plus output so far."""
        return self.num_prompt_tokens + self.num_generated

    @property
    def ttft_s(self) -> float:
        """Arrival to first token (emulated s)."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (emulated s; 0 with one token)."""
        n = self.num_generated
        return (self.finished_s - self.first_token_s) / (n - 1) if n > 1 else 0.0

    @property
    def e2e_s(self) -> float:
        return self.finished_s - self.arrival_s

    @property
    def is_done(self) -> bool:
        return self.status.is_final

    def advance(self, status: RequestStatus) -> None:
        """Moves to `status`; raises StateError if the lifecycle does not allow it."""
        if status not in _NEXT[self.status]:
            raise StateError(f"request {self.request_id}: {self.status.value} -> {status.value}")
        self.status = status

    def end(self, status: RequestStatus, reason: str = "") -> None:
        """Moves to a final status unless it already has one (ending twice is a no-op)."""
        assert status.is_final
        if self.status.is_final:
            return
        self.status = status
        if status is RequestStatus.FAILED:
            self.error = reason
        elif reason:
            self.finish_reason = reason
