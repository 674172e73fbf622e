"""Router records -> protobuf: a chunk of tokens, and the last chunk with the request's stats."""

from __future__ import annotations

from supernode.core.request import Request
from supernode.router.engine import OutputChunk
from supernode.v1 import router_pb2


def chunk_to_pb(record: Request, chunk: OutputChunk, text: str) -> router_pb2.GenerateChunk:
    return router_pb2.GenerateChunk(request_id=record.request_id, token_ids=chunk.token_ids, text=text)


def final_to_pb(record: Request, text: str) -> router_pb2.GenerateChunk:
    stats = router_pb2.RequestStats(
        num_prompt_tokens=record.num_prompt_tokens,
        num_output_tokens=record.num_generated,
        num_cached_tokens=record.num_cached_tokens,
        ttft_s=record.ttft_s,
        tpot_s=record.tpot_s,
        e2e_s=record.e2e_s,
        prefill_queue_s=record.prefill_queue_s,
        prefill_compute_s=record.prefill_compute_s,
        cache_load_s=record.cache_load_s,
        kv_pull_s=record.kv_pull_s,
        prefill_worker=record.prefill_worker,
        decode_worker=record.decode_worker,
        num_migrations=record.num_migrations,
    )
    return router_pb2.GenerateChunk(
        request_id=record.request_id,
        text=text,
        finished=True,
        finish_reason=record.finish_reason,
        stats=stats,
    )
