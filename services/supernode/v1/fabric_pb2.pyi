from supernode.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Plane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLANE_UNSPECIFIED: _ClassVar[Plane]
    PLANE_UB: _ClassVar[Plane]
    PLANE_RDMA: _ClassVar[Plane]
    PLANE_VPC: _ClassVar[Plane]

class EndpointKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_KIND_UNSPECIFIED: _ClassVar[EndpointKind]
    ENDPOINT_KIND_DIE: _ClassVar[EndpointKind]
    ENDPOINT_KIND_CPU: _ClassVar[EndpointKind]
PLANE_UNSPECIFIED: Plane
PLANE_UB: Plane
PLANE_RDMA: Plane
PLANE_VPC: Plane
ENDPOINT_KIND_UNSPECIFIED: EndpointKind
ENDPOINT_KIND_DIE: EndpointKind
ENDPOINT_KIND_CPU: EndpointKind

class Endpoint(_message.Message):
    __slots__ = ("kind", "index")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    kind: EndpointKind
    index: int
    def __init__(self, kind: _Optional[_Union[EndpointKind, str]] = ..., index: _Optional[int] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("worker_id", "role", "num_dies")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NUM_DIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    role: str
    num_dies: int
    def __init__(self, worker_id: _Optional[str] = ..., role: _Optional[str] = ..., num_dies: _Optional[int] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("dies", "lease_ttl_s")
    DIES_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    dies: _containers.RepeatedCompositeFieldContainer[_common_pb2.Die]
    lease_ttl_s: float
    def __init__(self, dies: _Optional[_Iterable[_Union[_common_pb2.Die, _Mapping]]] = ..., lease_ttl_s: _Optional[float] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("num_dies",)
    NUM_DIES_FIELD_NUMBER: _ClassVar[int]
    num_dies: int
    def __init__(self, num_dies: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("num_dies",)
    NUM_DIES_FIELD_NUMBER: _ClassVar[int]
    num_dies: int
    def __init__(self, num_dies: _Optional[int] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("src", "dst", "num_bytes", "plane", "tag")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    NUM_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    src: Endpoint
    dst: Endpoint
    num_bytes: int
    plane: Plane
    tag: str
    def __init__(self, src: _Optional[_Union[Endpoint, _Mapping]] = ..., dst: _Optional[_Union[Endpoint, _Mapping]] = ..., num_bytes: _Optional[int] = ..., plane: _Optional[_Union[Plane, str]] = ..., tag: _Optional[str] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("start_s", "finish_s", "bandwidth_bytes_per_s", "latency_s")
    START_S_FIELD_NUMBER: _ClassVar[int]
    FINISH_S_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    finish_s: float
    bandwidth_bytes_per_s: float
    latency_s: float
    def __init__(self, start_s: _Optional[float] = ..., finish_s: _Optional[float] = ..., bandwidth_bytes_per_s: _Optional[float] = ..., latency_s: _Optional[float] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("num_nodes", "npus_per_node", "dies_per_npu", "num_free_dies", "leases")
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    NPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    DIES_PER_NPU_FIELD_NUMBER: _ClassVar[int]
    NUM_FREE_DIES_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    num_nodes: int
    npus_per_node: int
    dies_per_npu: int
    num_free_dies: int
    leases: _containers.RepeatedCompositeFieldContainer[WorkerLease]
    def __init__(self, num_nodes: _Optional[int] = ..., npus_per_node: _Optional[int] = ..., dies_per_npu: _Optional[int] = ..., num_free_dies: _Optional[int] = ..., leases: _Optional[_Iterable[_Union[WorkerLease, _Mapping]]] = ...) -> None: ...

class WorkerLease(_message.Message):
    __slots__ = ("worker_id", "role", "dies", "expires_in_s")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DIES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    role: str
    dies: _containers.RepeatedScalarFieldContainer[int]
    expires_in_s: float
    def __init__(self, worker_id: _Optional[str] = ..., role: _Optional[str] = ..., dies: _Optional[_Iterable[int]] = ..., expires_in_s: _Optional[float] = ...) -> None: ...
