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

class TransferOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_OP_UNSPECIFIED: _ClassVar[TransferOp]
    TRANSFER_OP_READ: _ClassVar[TransferOp]
    TRANSFER_OP_WRITE: _ClassVar[TransferOp]
PLANE_UNSPECIFIED: Plane
PLANE_UB: Plane
PLANE_RDMA: Plane
PLANE_VPC: Plane
ENDPOINT_KIND_UNSPECIFIED: EndpointKind
ENDPOINT_KIND_DIE: EndpointKind
ENDPOINT_KIND_CPU: EndpointKind
TRANSFER_OP_UNSPECIFIED: TransferOp
TRANSFER_OP_READ: TransferOp
TRANSFER_OP_WRITE: TransferOp

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
    __slots__ = ("src", "dst", "num_bytes", "plane", "tag", "op")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    NUM_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    src: Endpoint
    dst: Endpoint
    num_bytes: int
    plane: Plane
    tag: str
    op: TransferOp
    def __init__(self, src: _Optional[_Union[Endpoint, _Mapping]] = ..., dst: _Optional[_Union[Endpoint, _Mapping]] = ..., num_bytes: _Optional[int] = ..., plane: _Optional[_Union[Plane, str]] = ..., tag: _Optional[str] = ..., op: _Optional[_Union[TransferOp, str]] = ...) -> None: ...

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

class TransferManyRequest(_message.Message):
    __slots__ = ("transfers",)
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[TransferRequest]
    def __init__(self, transfers: _Optional[_Iterable[_Union[TransferRequest, _Mapping]]] = ...) -> None: ...

class TransferManyResponse(_message.Message):
    __slots__ = ("transfers",)
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[TransferResponse]
    def __init__(self, transfers: _Optional[_Iterable[_Union[TransferResponse, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("num_busiest_links",)
    NUM_BUSIEST_LINKS_FIELD_NUMBER: _ClassVar[int]
    num_busiest_links: int
    def __init__(self, num_busiest_links: _Optional[int] = ...) -> None: ...

class LinkLoad(_message.Message):
    __slots__ = ("link_id", "capacity_bytes_per_s", "utilisation", "num_flows", "bytes_total", "is_down")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    NUM_FLOWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IS_DOWN_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    capacity_bytes_per_s: float
    utilisation: float
    num_flows: int
    bytes_total: int
    is_down: bool
    def __init__(self, link_id: _Optional[str] = ..., capacity_bytes_per_s: _Optional[float] = ..., utilisation: _Optional[float] = ..., num_flows: _Optional[int] = ..., bytes_total: _Optional[int] = ..., is_down: _Optional[bool] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("num_nodes", "npus_per_node", "dies_per_npu", "num_free_dies", "leases", "num_links", "faults", "busiest_links")
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    NPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    DIES_PER_NPU_FIELD_NUMBER: _ClassVar[int]
    NUM_FREE_DIES_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NUM_LINKS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    BUSIEST_LINKS_FIELD_NUMBER: _ClassVar[int]
    num_nodes: int
    npus_per_node: int
    dies_per_npu: int
    num_free_dies: int
    leases: _containers.RepeatedCompositeFieldContainer[WorkerLease]
    num_links: int
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    busiest_links: _containers.RepeatedCompositeFieldContainer[LinkLoad]
    def __init__(self, num_nodes: _Optional[int] = ..., npus_per_node: _Optional[int] = ..., dies_per_npu: _Optional[int] = ..., num_free_dies: _Optional[int] = ..., leases: _Optional[_Iterable[_Union[WorkerLease, _Mapping]]] = ..., num_links: _Optional[int] = ..., faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ..., busiest_links: _Optional[_Iterable[_Union[LinkLoad, _Mapping]]] = ...) -> None: ...

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

class InjectFaultRequest(_message.Message):
    __slots__ = ("link_id", "node", "bandwidth_factor", "duration_s")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    node: int
    bandwidth_factor: float
    duration_s: float
    def __init__(self, link_id: _Optional[str] = ..., node: _Optional[int] = ..., bandwidth_factor: _Optional[float] = ..., duration_s: _Optional[float] = ...) -> None: ...

class InjectFaultResponse(_message.Message):
    __slots__ = ("fault", "num_failed_transfers")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    NUM_FAILED_TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    num_failed_transfers: int
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ..., num_failed_transfers: _Optional[int] = ...) -> None: ...

class ClearFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearFaultsResponse(_message.Message):
    __slots__ = ("num_cleared",)
    NUM_CLEARED_FIELD_NUMBER: _ClassVar[int]
    num_cleared: int
    def __init__(self, num_cleared: _Optional[int] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("fault_id", "link_ids", "bandwidth_factor", "start_s", "end_s")
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_IDS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FACTOR_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    fault_id: int
    link_ids: _containers.RepeatedScalarFieldContainer[str]
    bandwidth_factor: float
    start_s: float
    end_s: float
    def __init__(self, fault_id: _Optional[int] = ..., link_ids: _Optional[_Iterable[str]] = ..., bandwidth_factor: _Optional[float] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ...) -> None: ...
