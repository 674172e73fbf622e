"""Pure schedulers over request records: the prefill batcher and the decode continuous batcher.

No I/O, no clock. The step loop (runtime/engine.py) calls `schedule()`, which returns a frozen batch
record, prices that batch with the cost model, waits, then calls `postprocess(batch)` with the batch it
ran; engines only add and cancel requests. Both schedulers keep bounded queues and raise
`QueueFullError` rather than grow.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from supernode.core.rank_loads import RankLoads
from supernode.core.request import Request, RequestStatus
from supernode.core.tokens import EOS_TOKEN, TokenModel
from supernode.hw.mtp import accepted_drafts, step_totals


class QueueFullError(Exception):
    """The waiting queue is at its bound."""


class CapacityError(Exception):
    """The request can never fit (e.g. more KV than a die holds)."""


# ---------------------------------------------------------------- prefill


@dataclass(frozen=True, slots=True)
class PrefillSlice:
    request: Request
    num_new: int  # tokens of this request computed in this batch
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
        self.waiting: deque[Request] = deque()
        self.num_running = 0  # requests in the batch being computed
        self.num_waiting_tokens = 0  # prompt tokens still to compute over every waiting request

    def add(self, request: Request) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFullError(f"prefill queue holds {self.max_queue} requests")
        assert request.num_prefill_remaining > 0, "a request computes at least one token"
        self.waiting.append(request)
        self.num_waiting_tokens += request.num_prefill_remaining

    def cancel(self, request: Request) -> None:
        """Takes a request out (its caller left); a batch already running it computes it anyway."""
        request.end(RequestStatus.CANCELLED, "cancelled")
        if request in self.waiting:
            self.waiting.remove(request)
            self.num_waiting_tokens -= request.num_prefill_remaining

    def schedule(self) -> PrefillBatch | None:
        """The next batch: waiting requests in order until the budget is spent (the last one chunked)."""
        slices: list[PrefillSlice] = []
        take_in_order(self.waiting, self.token_budget, slices)
        return self._batch(slices)

    def _batch(self, slices: list[PrefillSlice]) -> PrefillBatch | None:
        if not slices:
            return None
        self.num_running = len(slices)
        return PrefillBatch(tuple(slices))

    def postprocess(self, batch: PrefillBatch) -> list[Request]:
        """Records the batch as computed; returns the requests whose whole prompt is now done."""
        finished = []
        for s in batch.slices:
            request = s.request
            request.num_prefill_batches += 1
            if request.is_done:  # cancelled while its batch ran
                continue
            request.num_prefilled += s.num_new
            self.num_waiting_tokens -= s.num_new
            if request.num_prefill_remaining == 0:
                finished.append(request)
                self.waiting.remove(request)
        self.num_running = 0
        return finished


def take_in_order(queue: Iterable[Request], budget: int, slices: list[PrefillSlice]) -> int:
    """Appends to `slices` the requests of `queue` in order until `budget` tokens are spent (the last
    one chunked); returns the budget left."""
    for request in queue:
        if budget == 0:
            break
        take = min(request.num_prefill_remaining, budget)
        slices.append(PrefillSlice(request, take, request.num_cached_tokens + request.num_prefilled))
        if request.status is RequestStatus.QUEUED:
            request.advance(RequestStatus.PREFILLING)
        budget -= take
    return budget


# ---------------------------------------------------------------- decode


def _request_rng(seed: int, request_id: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def kv_len_at(request: Request, step: int) -> int:
    """Tokens whose KV the sequence holds during scheduler step `step` (prompt + output so far)."""
    plan = request.token_plan
    if plan is None:
        return request.kv_len
    done = step - request.decode_start_step  # steps it has run
    return request.num_prompt_tokens + 1 + (plan[done - 1] if done > 0 else 0)


@dataclass(frozen=True, slots=True)
class DecodeBatch:
    """One decode step: the sequences of each data-parallel rank, in rank order."""

    ranks: tuple[tuple[Request, ...], ...]
    step: int = 0  # the scheduler's step index this batch runs as (its first, when it runs several)
    num_steps: int = 1  # steps it runs with these sequences (> 1 only for counting-only sequences)
    largest: int = field(default=-1, compare=False, repr=False)  # max_batch_per_die if known (else -1)

    @property
    def num_seqs(self) -> int:
        return sum(map(len, self.ranks))

    @property
    def max_batch_per_die(self) -> int:
        if self.largest >= 0:
            return self.largest
        return max(map(len, self.ranks), default=0)

    def with_steps(self, num_steps: int) -> DecodeBatch:
        """This batch running `num_steps` steps (`dataclasses.replace` costs a few times this, per batch)."""
        return DecodeBatch(self.ranks, self.step, num_steps, self.largest)

    def busiest_rank(self) -> tuple[Request, ...]:
        """The rank with most sequences: every rank steps in lockstep, so it sets the step time."""
        return max(self.ranks, key=len)

    def kv_lens(self, rank: tuple[Request, ...], ahead: int = 0) -> list[int]:
        """The context lengths (tokens) of one rank's sequences during this step (`ahead` steps on)."""
        step = self.step + ahead
        return [kv_len_at(s, step) for s in rank]

    def rank_kv_lens(self) -> list[list[int]]:
        """Each rank's sequences' context lengths (tokens), for pricing the step."""
        return [self.kv_lens(rank) for rank in self.ranks]


@dataclass(frozen=True, slots=True)
class StepOutput:
    request: Request
    token_ids: list[int]  # tokens emitted this step (empty when only counted)
    num_tokens: int  # how many tokens it emitted this step


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
        self.kv_reserved = [0] * num_dies  # KV tokens reserved on each rank
        self.num_kv_reserved = 0  # their sum (read on every queue update, so not summed over the ranks)
        self.num_reserved = 0  # requests holding a reservation (waiting, running or not yet arrived)
        self.waiting: deque[Request] = deque()
        self.running: list[list[Request]] = [[] for _ in range(num_dies)]
        self.step = 0  # steps run so far
        # Counting only: (step after which it is done, tie-break, request) of each running sequence,
        # so a step touches its finishers, not every sequence.
        self._finishes: list[tuple[int, int, Request]] = []
        self._order = itertools.count()
        self.loads = RankLoads(num_dies)  # counting-only sequences' load per rank (see rank_loads)
        # Kept with `running` (changed only here), so a step does not walk every rank to count them:
        self._num_running = 0  # sequences in `running`
        self._num_listed = 0  # of them, those that draw their tokens (no token plan)
        self._rank_tuples: list[tuple[Request, ...]] = [
            ()
        ] * num_dies  # each rank's batch as the last DecodeBatch held it
        self._changed: set[int] = set()  # ranks whose batch changed since that DecodeBatch
        self._ranks: tuple[tuple[Request, ...], ...] = tuple(self._rank_tuples)
        self._largest = 0  # the longest rank batch in `running`
        self._ranks_of_len = [num_dies]  # [n]: ranks whose batch holds n sequences

    # -- admission

    def reserve(self, request: Request, num_prompt_tokens: int | None = None) -> None:
        """Reserves prompt + max_tokens of KV on the rank with most room; sets dp_rank, num_kv_tokens.
        `num_prompt_tokens` stands in for the prompt when the record does not hold it yet."""
        num_prompt = request.num_prompt_tokens if num_prompt_tokens is None else num_prompt_tokens
        need = num_prompt + request.max_tokens
        if need > self.kv_capacity:
            raise CapacityError(f"needs {need} KV tokens, a die holds {self.kv_capacity}")
        if self.num_reserved >= self.max_queue + self.num_dies * self.max_batch_per_die:
            raise QueueFullError("decode reservations at their bound")
        rank = self.kv_reserved.index(min(self.kv_reserved))  # the first with most room
        if self.kv_reserved[rank] + need > self.kv_capacity:
            raise QueueFullError(f"no rank has {need} KV tokens free")
        self.kv_reserved[rank] += need
        self.num_kv_reserved += need
        self.num_reserved += 1
        request.dp_rank, request.num_kv_tokens = rank, need

    def release(self, request: Request) -> None:
        """Gives its reserved KV back (idempotent)."""
        if request.num_kv_tokens:
            self.kv_reserved[request.dp_rank] -= request.num_kv_tokens
            self.num_kv_reserved -= request.num_kv_tokens
            self.num_reserved -= 1
            request.num_kv_tokens = 0

    def add(self, request: Request, model: TokenModel | None, num_resumed: int = 0) -> None:
        """Queues a reserved request whose KV has arrived (the prefill's first token already in
        `first_token`); it joins its rank's batch at the next step with room. `model` None: tokens
        are only counted. `num_resumed`: output tokens a migrated request had before its first token
        here; their MTP draws are replayed, so its steps emit the tokens in the same groups as on
        the instance it left."""
        request.num_generated = 1
        request.token_model = model
        request.mtp_rng = _request_rng(request.sampling.seed, request.request_id)
        done = 1
        while done < 1 + num_resumed:  # the original run's steps after its first token
            done += 1 + self._accepted_drafts(request)
        if model is None:
            request.token_plan = self._plan(request)
        request.advance(RequestStatus.DECODING)
        self.waiting.append(request)

    def _plan(self, request: Request) -> list[int]:
        """Counting only: the tokens after each step, drawn as the steps would draw them (the same
        MTP acceptances in the same order, so counts and step times match drawing every token)."""
        assert request.mtp_rng is not None
        return step_totals(self.mtp_depth, self.mtp_accept, request.mtp_rng.random, request.max_tokens - 1)

    def cancel(self, request: Request) -> None:
        request.end(RequestStatus.CANCELLED, "cancelled")
        if request in self.waiting:
            self.waiting.remove(request)
        batch = self.running[request.dp_rank] if request.dp_rank >= 0 else []
        if request in batch:
            batch.remove(request)
            self._left(request)
            if request.token_plan:
                self.loads.cancel(request.dp_rank, request.num_prompt_tokens + 1, request.token_plan,
                                  request.decode_start_step)  # fmt: skip
        self.release(request)

    # -- the step

    @property
    def num_running(self) -> int:
        return self._num_running

    def schedule(self, max_batch_per_die: int | None = None) -> DecodeBatch | None:
        """Admits waiting sequences into their ranks' batches (at most `max_batch_per_die` each, the
        configured bound by default); returns the step's batch or None when nothing runs."""
        limit = self.max_batch_per_die if max_batch_per_die is None else max_batch_per_die
        still_waiting: deque[Request] = deque()
        while self.waiting:
            request = self.waiting.popleft()
            batch = self.running[request.dp_rank]
            if len(batch) >= limit:
                still_waiting.append(request)
                continue
            batch.append(request)
            self._num_running += 1
            self._changed.add(request.dp_rank)
            self._resized(len(batch) - 1, len(batch))
            if request.token_plan is None:
                self._num_listed += 1
            else:
                request.decode_start_step = self.step
                done_at = self.step + len(request.token_plan)
                heapq.heappush(self._finishes, (done_at, next(self._order), request))
                if request.token_plan:
                    self.loads.join(request.dp_rank, request.num_prompt_tokens + 1, request.token_plan)
        self.waiting = still_waiting
        if self._num_running == 0:
            return None
        if self._changed:  # only the ranks whose batch changed are copied again
            tuples = self._rank_tuples
            for rank in self._changed:
                tuples[rank] = tuple(self.running[rank])
            self._changed.clear()
            self._ranks = tuple(tuples)
        return DecodeBatch(self._ranks, self.step, largest=self._largest)

    def steps_until_change(self) -> int:
        """Steps the running batch keeps its sequences when only counting sequences run and nothing
        joins: up to the next planned finish (at least 1)."""
        while self._finishes and self._finishes[0][2].is_done:
            heapq.heappop(self._finishes)
        if not self._finishes:
            return 1
        return max(1, self._finishes[0][0] - self.step)

    @property
    def is_counting_only(self) -> bool:
        """Every running sequence only counts its tokens (its context is a known function of the step)."""
        return self.loads.num_seqs_total == self._num_running

    def postprocess(self, batch: DecodeBatch) -> list[StepOutput]:
        """Emits the tokens of the step `batch` just ran and retires finished sequences. A sequence
        that only counts emits once, when it finishes, all its tokens at once."""
        self.step = batch.step + batch.num_steps
        self.loads.advance(self.step)
        outputs = []
        for rank in batch.ranks if self._num_listed else ():  # no pass when every sequence counts
            for request in rank:
                if request.is_done or request.token_plan is not None:  # cancelled meanwhile; counted
                    continue
                outputs.append(self._advance(request))
                if request.finish_reason:
                    self._retire(request)
        while self._finishes and self._finishes[0][0] <= self.step:
            request = heapq.heappop(self._finishes)[2]
            if request.is_done:
                continue
            plan = request.token_plan or []
            num = plan[-1] if plan else 0
            request.num_decode_steps, request.num_generated = len(plan), 1 + num
            request.finish_reason = "length"
            outputs.append(StepOutput(request, [], num))
            self._retire(request)
        return outputs

    def _retire(self, request: Request) -> None:
        request.end(RequestStatus.FINISHED)
        self.running[request.dp_rank].remove(request)
        self._left(request)
        if request.token_plan:
            self.loads.leave(request.dp_rank)
        self.release(request)

    def clear_running(self) -> None:
        """Empties every rank's batch (the step loop failed and its requests were failed), with the
        counts kept beside the batches; the lists must not be emptied behind the scheduler's back."""
        for rank in self.running:
            rank.clear()
        self._num_running = self._num_listed = self._largest = 0
        self._ranks_of_len = [self.num_dies]
        self._changed.update(range(self.num_dies))

    def _left(self, request: Request) -> None:
        """Bookkeeping of a sequence just taken out of its rank's batch."""
        self._num_running -= 1
        self._changed.add(request.dp_rank)
        if request.token_plan is None:
            self._num_listed -= 1
        size = len(self.running[request.dp_rank])
        self._resized(size + 1, size)

    def _resized(self, old: int, new: int) -> None:
        """A rank's batch went from `old` to `new` sequences (one more or one fewer)."""
        counts = self._ranks_of_len
        if new >= len(counts):
            counts.append(0)
        counts[old] -= 1
        counts[new] += 1
        if new > self._largest:
            self._largest = new
        elif old == self._largest and counts[old] == 0:
            self._largest = new

    def _advance(self, request: Request) -> StepOutput:
        request.num_decode_steps += 1
        count = min(1 + self._accepted_drafts(request), request.max_tokens - request.num_generated)
        model = request.token_model
        if model is None:
            request.num_generated += count
            if request.num_generated >= request.max_tokens:
                request.finish_reason = "length"
            return StepOutput(request, [], count)
        tokens = []
        stop = request.sampling.stop_token_ids
        for _ in range(count):
            token = model.next_token()
            model.append(token)
            request.num_generated += 1
            tokens.append(token)
            if token in stop or (token == EOS_TOKEN and not request.sampling.ignore_eos):
                request.finish_reason = "stop"
                break
        if not request.finish_reason and request.num_generated >= request.max_tokens:
            request.finish_reason = "length"
        return StepOutput(request, tokens, len(tokens))

    def _accepted_drafts(self, request: Request) -> int:
        """MTP: the one acceptance process the cost model prices (`hw.mtp`), drawn from the request's RNG."""
        rng = request.mtp_rng
        assert rng is not None
        return accepted_drafts(self.mtp_depth, self.mtp_accept, rng.random)
