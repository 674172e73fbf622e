from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class KvHandle(_message.Message):
    __slots__ = ("request_id", "namespace", "block_keys", "num_tokens", "nominal_bytes", "prefill_worker", "prefill_die", "block_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_WORKER_FIELD_NUMBER: _ClassVar[int]
    PREFILL_DIE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    namespace: str
    block_keys: _containers.RepeatedScalarFieldContainer[str]
    num_tokens: int
    nominal_bytes: int
    prefill_worker: str
    prefill_die: int
    block_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., namespace: _Optional[str] = ..., block_keys: _Optional[_Iterable[str]] = ..., num_tokens: _Optional[int] = ..., nominal_bytes: _Optional[int] = ..., prefill_worker: _Optional[str] = ..., prefill_die: _Optional[int] = ..., block_tokens: _Optional[int] = ...) -> None: ...

class Die(_message.Message):
    __slots__ = ("index", "node", "npu", "die")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NPU_FIELD_NUMBER: _ClassVar[int]
    DIE_FIELD_NUMBER: _ClassVar[int]
    index: int
    node: int
    npu: int
    die: int
    def __init__(self, index: _Optional[int] = ..., node: _Optional[int] = ..., npu: _Optional[int] = ..., die: _Optional[int] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("seed", "temperature", "top_p", "stop_token_ids", "ignore_eos", "min_tokens", "eos_token_id", "eos_position")
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EOS_POSITION_FIELD_NUMBER: _ClassVar[int]
    seed: int
    temperature: float
    top_p: float
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    ignore_eos: bool
    min_tokens: int
    eos_token_id: int
    eos_position: int
    def __init__(self, seed: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., ignore_eos: _Optional[bool] = ..., min_tokens: _Optional[int] = ..., eos_token_id: _Optional[int] = ..., eos_position: _Optional[int] = ...) -> None: ...

class LoadReport(_message.Message):
    __slots__ = ("worker_id", "role", "num_running", "num_waiting", "max_queue", "kv_tokens_used", "kv_tokens_capacity", "draining", "num_dies")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NUM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    NUM_WAITING_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    KV_TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    KV_TOKENS_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    NUM_DIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    role: str
    num_running: int
    num_waiting: int
    max_queue: int
    kv_tokens_used: int
    kv_tokens_capacity: int
    draining: bool
    num_dies: int
    def __init__(self, worker_id: _Optional[str] = ..., role: _Optional[str] = ..., num_running: _Optional[int] = ..., num_waiting: _Optional[int] = ..., max_queue: _Optional[int] = ..., kv_tokens_used: _Optional[int] = ..., kv_tokens_capacity: _Optional[int] = ..., draining: _Optional[bool] = ..., num_dies: _Optional[int] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
