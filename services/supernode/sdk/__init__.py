"""The Supernode client SDK: async and sync clients for the router's gRPC API.

    async with AsyncClient("127.0.0.1:50050") as client:
        async for chunk in client.generate("Hello", max_tokens=32):
            print(chunk.text, end="")

    with Client("127.0.0.1:50050") as client:
        print(client.complete("Hello", max_tokens=32).text)

Failures raise `SupernodeError` subclasses mapped from gRPC status codes (InvalidArgumentError,
ResourceExhaustedError, UnavailableError, DeadlineExceededError, ...).
"""

from supernode.runtime.errors import (
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    SupernodeError,
    UnauthenticatedError,
    UnavailableError,
)
from supernode.sdk.client import AsyncClient, Chunk, Client, Completion, RequestStats

__all__ = [
    "AsyncClient",
    "Client",
    "Chunk",
    "Completion",
    "RequestStats",
    "SupernodeError",
    "InvalidArgumentError",
    "FailedPreconditionError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
    "DeadlineExceededError",
    "DataLossError",
    "UnauthenticatedError",
    "InternalError",
]
