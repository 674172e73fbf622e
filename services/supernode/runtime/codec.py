"""Protobuf <-> record translation for the messages several services share (common.proto)."""

from __future__ import annotations

from supernode.core.request import KvHandle, Sampling
from supernode.runtime.peers import Die, LoadSnapshot
from supernode.v1 import common_pb2


def sampling_from_pb(msg: common_pb2.Sampling) -> Sampling:
    return Sampling(
        int(msg.seed), frozenset(msg.stop_token_ids), bool(msg.ignore_eos),
        int(msg.min_tokens), int(msg.eos_token_id), int(msg.eos_position),
    )  # fmt: skip


def sampling_to_pb(sampling: Sampling) -> common_pb2.Sampling:
    return common_pb2.Sampling(
        seed=sampling.seed, stop_token_ids=sorted(sampling.stop_token_ids), ignore_eos=sampling.ignore_eos,
        min_tokens=sampling.min_tokens, eos_token_id=sampling.eos_token_id,
        eos_position=sampling.eos_position,
    )  # fmt: skip


def kv_from_pb(msg: common_pb2.KvHandle) -> KvHandle:
    return KvHandle(
        request_id=msg.request_id,
        namespace=msg.namespace,
        block_keys=tuple(msg.block_keys),
        num_tokens=msg.num_tokens,
        nominal_bytes=msg.nominal_bytes,
        prefill_worker=msg.prefill_worker,
        prefill_die=msg.prefill_die,
        block_tokens=msg.block_tokens,
    )


def kv_to_pb(kv: KvHandle) -> common_pb2.KvHandle:
    return common_pb2.KvHandle(
        request_id=kv.request_id,
        namespace=kv.namespace,
        block_keys=list(kv.block_keys),
        num_tokens=kv.num_tokens,
        nominal_bytes=kv.nominal_bytes,
        prefill_worker=kv.prefill_worker,
        prefill_die=kv.prefill_die,
        block_tokens=kv.block_tokens,
    )


def die_from_pb(msg: common_pb2.Die) -> Die:
    return Die(msg.index, msg.node, msg.npu, msg.die)


def die_to_pb(die: Die) -> common_pb2.Die:
    return common_pb2.Die(index=die.index, node=die.node, npu=die.npu, die=die.die)


def load_from_pb(msg: common_pb2.LoadReport) -> LoadSnapshot:
    return LoadSnapshot(
        worker_id=msg.worker_id,
        role=msg.role,
        num_running=msg.num_running,
        num_waiting=msg.num_waiting,
        max_queue=msg.max_queue,
        kv_tokens_used=msg.kv_tokens_used,
        kv_tokens_capacity=msg.kv_tokens_capacity,
        draining=msg.draining,
        num_dies=msg.num_dies,
    )


def load_to_pb(load: LoadSnapshot) -> common_pb2.LoadReport:
    return common_pb2.LoadReport(
        worker_id=load.worker_id,
        role=load.role,
        num_running=load.num_running,
        num_waiting=load.num_waiting,
        max_queue=load.max_queue,
        kv_tokens_used=load.kv_tokens_used,
        kv_tokens_capacity=load.kv_tokens_capacity,
        draining=load.draining,
        num_dies=load.num_dies,
    )
