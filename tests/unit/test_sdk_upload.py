"""sdk/upload.py: the header carries no prompt, chunks are bounded and reassemble the prompt."""

from __future__ import annotations

from supernode.sdk import upload
from supernode.v1 import router_pb2


def test_header_first_then_bounded_chunks_that_reassemble_the_prompt():
    request = router_pb2.GenerateRequest(prompt="abcdefghij", max_tokens=3, long_context="xl3m")
    msgs = list(upload.messages(request, prompt="abcdefghij", chunk_tokens=4))
    assert msgs[0].WhichOneof("part") == "header"
    assert msgs[0].header.prompt == "" and msgs[0].header.max_tokens == 3
    assert msgs[0].header.long_context == "xl3m"
    assert [m.prompt.text for m in msgs[1:]] == ["abcd", "efgh", "ij"]
    ids = list(upload.messages(router_pb2.GenerateRequest(), token_ids=list(range(9)), chunk_tokens=4))
    assert [list(m.prompt.token_ids) for m in ids[1:]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


def test_chunks_from_an_iterable_are_split_further_when_too_big():
    msgs = list(
        upload.messages(router_pb2.GenerateRequest(), chunks=iter(["xyz", "0123456"]), chunk_tokens=3)
    )
    assert [m.prompt.text for m in msgs[1:]] == ["xyz", "012", "345", "6"]


def test_only_huge_prompts_are_uploaded_by_default():
    assert not upload.is_huge("x" * 1000, None)
    assert upload.is_huge("x" * (upload.UPLOAD_THRESHOLD + 1), None)
    assert upload.is_huge(None, [1] * (upload.UPLOAD_THRESHOLD + 1))
