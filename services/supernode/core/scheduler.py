"""Pure schedulers: the prefill batcher and the decode continuous batcher (no I/O, no clock).

The step loop (runtime/engine.py) calls `schedule()`, prices the batch with the cost model, waits,
then calls `postprocess()`; services only add and remove requests. Both schedulers keep bounded
queues and raise `QueueFullError` rather than grow.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

from supernode.core.tokens import EOS_TOKEN, TokenModel
from supernode.hw.mtp import accepted_drafts


class QueueFullError(Exception):
    """The waiting queue is at its bound."""


class CapacityError(Exception):
    """The request can never fit (e.g. more KV than a die holds)."""


# ---------------------------------------------------------------- prefill


@dataclass(slots=True, eq=False)
class PrefillJob:
    request_id: str
    num_tokens: int  # prompt length (tokens)
    num_cached: int  # leading tokens loaded from the context cache instead of computed (tokens)
    num_done: int = 0  # tokens computed so far beyond the cached prefix
    num_batches: int = 0  # batches the job took part in (> 1 when chunked)

    @property
    def num_remaining(self) -> int:
        return self.num_tokens - self.num_cached - self.num_done


@dataclass(frozen=True, slots=True)
class PrefillSlice:
    job: PrefillJob
    num_new: int  # tokens of this job computed in this batch
    num_context: int  # tokens before them whose KV already exists (cache + earlier chunks)


@dataclass(frozen=True, slots=True)
class PrefillBatch:
    slices: tuple[PrefillSlice, ...]

    @property
    def num_new_tokens(self) -> int:
        return sum(s.num_new for s in self.slices)


class PrefillScheduler:
    """FIFO batches under a token budget; a prompt longer than what is left of the budget is chunked."""

    def __init__(self, token_budget: int, max_queue: int) -> None:
        assert token_budget > 0 and max_queue > 0
        self.token_budget = token_budget
        self.max_queue = max_queue
        self.waiting: deque[PrefillJob] = deque()
        self.num_running = 0

    def add(self, job: PrefillJob) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFullError(f"prefill queue holds {self.max_queue} requests")
        assert job.num_remaining > 0, "a job computes at least one token"
        self.waiting.append(job)

    def remove(self, job: PrefillJob) -> None:
        if job in self.waiting:
            self.waiting.remove(job)

    @property
    def num_waiting_tokens(self) -> int:
        return sum(job.num_remaining for job in self.waiting)

    def schedule(self) -> PrefillBatch | None:
        """The next batch: waiting jobs in order until the budget is spent (the last one chunked)."""
        budget = self.token_budget
        slices = []
        for job in self.waiting:
            if budget == 0:
                break
            take = min(job.num_remaining, budget)
            slices.append(PrefillSlice(job, take, job.num_cached + job.num_done))
            budget -= take
        if not slices:
            return None
        self.num_running = len(slices)
        return PrefillBatch(tuple(slices))

    def postprocess(self, batch: PrefillBatch) -> list[PrefillJob]:
        """Records the batch as computed; returns the jobs whose whole prompt is now done."""
        finished = []
        for s in batch.slices:
            s.job.num_done += s.num_new
            s.job.num_batches += 1
            if s.job.num_remaining == 0:
                finished.append(s.job)
                self.remove(s.job)
        self.num_running = 0
        return finished


# ---------------------------------------------------------------- decode


def _request_rng(seed: int, request_id: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


@dataclass(slots=True, eq=False)
class DecodeSeq:
    request_id: str
    dp_rank: int
    max_tokens: int  # tokens to generate in all, the prefill's first token included
    model: TokenModel
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = True
    num_generated: int = 1  # the first token came from prefill
    num_steps: int = 0
    finish_reason: str = ""
    mtp_rng: random.Random = field(default_factory=lambda: random.Random(0))

    @property
    def kv_len(self) -> int:
        return len(self.model.tokens)

    @property
    def is_finished(self) -> bool:
        return bool(self.finish_reason)


@dataclass(slots=True)
class Reservation:
    request_id: str
    dp_rank: int
    num_kv_tokens: int  # prompt + max_tokens, held until the request ends


@dataclass(frozen=True, slots=True)
class StepOutput:
    seq: DecodeSeq
    token_ids: list[int]


class DecodeScheduler:
    """Continuous batching over `num_dies` data-parallel ranks.

    KV capacity is reserved in full (prompt + max_tokens) when the router reserves, so a running
    sequence can never run out of memory mid-generation; when a rank is full, new reservations are
    refused (the router tries another instance or queues) — the "wait" policy: nothing is evicted, no
    request is lost. Every rank steps in lockstep (EP all-to-all), so a step costs what the busiest
    rank's batch costs.
    """

    def __init__(
        self,
        num_dies: int,
        max_batch_per_die: int,
        kv_capacity_tokens_per_die: int,
        max_queue: int,
        mtp_depth: int = 0,
        mtp_accept: float = 0.0,
    ) -> None:
        self.num_dies = num_dies
        self.max_batch_per_die = max_batch_per_die
        self.kv_capacity = kv_capacity_tokens_per_die
        self.max_queue = max_queue
        self.mtp_depth = mtp_depth
        self.mtp_accept = mtp_accept
        self.kv_reserved = [0] * num_dies
        self.reservations: dict[str, Reservation] = {}
        self.waiting: deque[DecodeSeq] = deque()
        self.running: list[list[DecodeSeq]] = [[] for _ in range(num_dies)]

    # -- admission

    def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation:
        need = num_prompt_tokens + max_tokens
        if need > self.kv_capacity:
            raise CapacityError(f"needs {need} KV tokens, a die holds {self.kv_capacity}")
        if len(self.reservations) >= self.max_queue + self.num_dies * self.max_batch_per_die:
            raise QueueFullError("decode reservations at their bound")
        rank = min(range(self.num_dies), key=lambda r: self.kv_reserved[r])
        if self.kv_reserved[rank] + need > self.kv_capacity:
            raise QueueFullError(f"no rank has {need} KV tokens free")
        self.kv_reserved[rank] += need
        reservation = Reservation(request_id, rank, need)
        self.reservations[request_id] = reservation
        return reservation

    def release(self, request_id: str) -> None:
        reservation = self.reservations.pop(request_id, None)
        if reservation is not None:
            self.kv_reserved[reservation.dp_rank] -= reservation.num_kv_tokens

    def new_seq(
        self,
        reservation: Reservation,
        model: TokenModel,
        max_tokens: int,
        seed: int,
        stop_token_ids: frozenset[int] = frozenset(),
        ignore_eos: bool = True,
    ) -> DecodeSeq:
        return DecodeSeq(
            reservation.request_id,
            reservation.dp_rank,
            max_tokens,
            model,
            stop_token_ids,
            ignore_eos,
            mtp_rng=_request_rng(seed, reservation.request_id),
        )

    def add(self, seq: DecodeSeq) -> None:
        """Queues a sequence whose KV has arrived; it joins the batch at the next step with room."""
        self.waiting.append(seq)

    def cancel(self, seq: DecodeSeq) -> None:
        seq.finish_reason = seq.finish_reason or "cancelled"
        if seq in self.waiting:
            self.waiting.remove(seq)
        batch = self.running[seq.dp_rank]
        if seq in batch:
            batch.remove(seq)
        self.release(seq.request_id)

    # -- the step

    @property
    def num_running(self) -> int:
        return sum(len(b) for b in self.running)

    def schedule(self) -> list[list[DecodeSeq]] | None:
        """Admits waiting sequences into their ranks' batches; returns the per-rank batches or None."""
        still_waiting: deque[DecodeSeq] = deque()
        while self.waiting:
            seq = self.waiting.popleft()
            batch = self.running[seq.dp_rank]
            (batch if len(batch) < self.max_batch_per_die else still_waiting).append(seq)
        self.waiting = still_waiting
        if self.num_running == 0:
            return None
        return self.running

    def busiest_rank(self) -> list[DecodeSeq]:
        return max(self.running, key=len)

    def postprocess(self) -> list[StepOutput]:
        """Generates each running sequence's tokens for the step just priced; retires finished ones."""
        outputs = []
        for batch in self.running:
            for seq in batch:
                outputs.append(StepOutput(seq, self._advance(seq)))
            for seq in [s for s in batch if s.is_finished]:
                batch.remove(seq)
                self.release(seq.request_id)
        return outputs

    def _advance(self, seq: DecodeSeq) -> list[int]:
        seq.num_steps += 1
        count = 1 + self._accepted_drafts(seq)
        tokens = []
        for _ in range(min(count, seq.max_tokens - seq.num_generated)):
            token = seq.model.next_token()
            seq.model.append(token)
            seq.num_generated += 1
            tokens.append(token)
            if token in seq.stop_token_ids or (token == EOS_TOKEN and not seq.ignore_eos):
                seq.finish_reason = "stop"
                break
        if not seq.finish_reason and seq.num_generated >= seq.max_tokens:
            seq.finish_reason = "length"
        return tokens

    def _accepted_drafts(self, seq: DecodeSeq) -> int:
        """MTP: the one acceptance process the cost model prices (`hw.mtp`), drawn from the request's RNG."""
        return accepted_drafts(self.mtp_depth, self.mtp_accept, seq.mtp_rng.random)
