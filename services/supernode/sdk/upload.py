"""Chunked prompt upload: the messages of `Router.GenerateUpload`, so that a prompt of millions of
tokens never travels in one gRPC message (and, from an iterator of chunks, never sits in the client
whole either)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from supernode.v1 import router_pb2

CHUNK_TOKENS = 256 * 1024  # tokens (or text characters) per upload message: ~1 MB of ids at most
UPLOAD_THRESHOLD = 1024 * 1024  # a prompt longer than this (tokens or characters) is uploaded in chunks

PromptChunks = Iterable[str] | Iterable[Sequence[int]]


def is_huge(prompt: str | None, token_ids: Sequence[int] | None) -> bool:
    return len(prompt or "") > UPLOAD_THRESHOLD or len(token_ids or ()) > UPLOAD_THRESHOLD


def messages(
    request: router_pb2.GenerateRequest,
    prompt: str | None = None,
    token_ids: Sequence[int] | None = None,
    chunks: PromptChunks | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
) -> Iterator[router_pb2.UploadChunk]:
    """The header (the request without its prompt), then the prompt in chunks of at most
    `chunk_tokens` tokens (characters for text; a UTF-8 character is never split)."""
    header = router_pb2.GenerateRequest()
    header.CopyFrom(request)
    header.ClearField("prompt")
    header.ClearField("token_ids")
    yield router_pb2.UploadChunk(header=header)
    if chunks is None:
        chunks = [prompt] if prompt else [token_ids or ()]
    for chunk in chunks:
        for start in range(0, len(chunk), chunk_tokens):
            part = chunk[start : start + chunk_tokens]
            if isinstance(part, str):
                yield router_pb2.UploadChunk(prompt=router_pb2.PromptChunk(text=part))
            else:
                yield router_pb2.UploadChunk(prompt=router_pb2.PromptChunk(token_ids=part))
