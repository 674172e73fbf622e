from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("namespace", "block_keys")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    block_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., block_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("num_cached_blocks",)
    NUM_CACHED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    num_cached_blocks: int
    def __init__(self, num_cached_blocks: _Optional[int] = ...) -> None: ...

class LookupManyRequest(_message.Message):
    __slots__ = ("namespace", "prefixes")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefixes: _containers.RepeatedCompositeFieldContainer[LookupRequest]
    def __init__(self, namespace: _Optional[str] = ..., prefixes: _Optional[_Iterable[_Union[LookupRequest, _Mapping]]] = ...) -> None: ...

class LookupManyResponse(_message.Message):
    __slots__ = ("num_cached_blocks",)
    NUM_CACHED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    num_cached_blocks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_cached_blocks: _Optional[_Iterable[int]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("key", "tokens", "payload", "nominal_bytes")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    key: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    payload: bytes
    nominal_bytes: int
    def __init__(self, key: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ..., payload: _Optional[bytes] = ..., nominal_bytes: _Optional[int] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("namespace", "blocks")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, namespace: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("num_stored", "num_already_cached", "payload_bytes", "stored")
    NUM_STORED_FIELD_NUMBER: _ClassVar[int]
    NUM_ALREADY_CACHED_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    num_stored: int
    num_already_cached: int
    payload_bytes: int
    stored: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, num_stored: _Optional[int] = ..., num_already_cached: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., stored: _Optional[_Iterable[bool]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("namespace", "block_keys", "with_payload")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    block_keys: _containers.RepeatedScalarFieldContainer[str]
    with_payload: bool
    def __init__(self, namespace: _Optional[str] = ..., block_keys: _Optional[_Iterable[str]] = ..., with_payload: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("blocks", "missing_keys")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., missing_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("num_hits", "num_misses", "bytes_written", "bytes_read", "num_keys", "redis_used_memory", "redis_evicted_keys", "num_digest_failures")
    NUM_HITS_FIELD_NUMBER: _ClassVar[int]
    NUM_MISSES_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    NUM_KEYS_FIELD_NUMBER: _ClassVar[int]
    REDIS_USED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    REDIS_EVICTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    NUM_DIGEST_FAILURES_FIELD_NUMBER: _ClassVar[int]
    num_hits: int
    num_misses: int
    bytes_written: int
    bytes_read: int
    num_keys: int
    redis_used_memory: int
    redis_evicted_keys: int
    num_digest_failures: int
    def __init__(self, num_hits: _Optional[int] = ..., num_misses: _Optional[int] = ..., bytes_written: _Optional[int] = ..., bytes_read: _Optional[int] = ..., num_keys: _Optional[int] = ..., redis_used_memory: _Optional[int] = ..., redis_evicted_keys: _Optional[int] = ..., num_digest_failures: _Optional[int] = ...) -> None: ...
