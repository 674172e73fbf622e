"""Response bodies for the two endpoints, whole and as SSE chunks, in OpenAI's shapes.

`usage` carries the context-cache hits: `prompt_tokens_details.cached_tokens` = prompt tokens whose KV came
from the pool instead of being computed; and `num_migrations` (a Supernode extra): how many times the
router moved the request's choices to another decode instance after a failure (0 in a fault-free run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from supernode.core.predictive import TokenLogprob
from supernode.frontend.choices import ChoiceResult, Usage
from supernode.frontend.logprobs import Render, chat_logprobs, completion_logprobs

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, object]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(u: Usage) -> dict[str, object]:
    """OpenAI `usage` (with vLLM's `prompt_tokens_details.cached_tokens`, and `num_migrations`)."""
    return {
        "prompt_tokens": u.num_prompt_tokens,
        "completion_tokens": u.num_output_tokens,
        "total_tokens": u.num_prompt_tokens + u.num_output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.num_cached_tokens},
        "num_migrations": u.num_migrations,
    }


@dataclass(slots=True)
class Encoder:
    """Shapes one request's responses; `chat` picks chat.completion over text_completion."""

    model: str
    chat: bool
    include_usage: bool = False
    request_id: str = ""
    created: int = 0
    render: Render = str  # a token id's text, for logprobs
    _text_offsets: dict[int, int] = field(default_factory=dict)  # choice -> characters streamed so far

    def start(self, request_id: str) -> None:
        self.request_id = request_id
        self.created = int(time.time())

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{self.request_id}"

    def full(self, results: list[ChoiceResult], total: Usage) -> dict[str, object]:
        """The non-streaming body: one choice per result."""
        choices: list[dict[str, object]] = []
        for index, result in enumerate(results):
            if self.chat:
                choice: dict[str, object] = {
                    "index": index,
                    "message": {"role": "assistant", "content": result.text},
                }
            else:
                choice = {"index": index, "text": result.text}
            logprobs = self._logprobs(result.logprobs, 0)
            choices.append(choice | {"logprobs": logprobs, "finish_reason": result.finish_reason})
        kind = "chat.completion" if self.chat else "text_completion"
        return self._envelope(kind, choices) | {"usage": usage(total)}

    def first(self, index: int = 0) -> bytes:
        """What a choice's stream opens with: the assistant role for chat, nothing for completions."""
        if not self.chat:
            return b""
        return sse(self._chunk({"delta": {"role": "assistant", "content": ""}}, None, index, None))

    def delta(
        self, text: str, finish_reason: str | None, index: int = 0, so_far: Usage | None = None,
        logprobs: Sequence[TokenLogprob] | None = None,
    ) -> bytes:  # fmt: skip
        """One streamed piece of a choice's text (finish_reason on its last); `so_far` is the
        usage up to here (`continuous_usage_stats`); `logprobs` those of the piece's tokens."""
        body: dict[str, object] = {"text": text}
        if self.chat:
            body = {"delta": {"content": text} if text else {}}
        offset = self._text_offsets.get(index, 0)
        self._text_offsets[index] = offset + len(text)
        return sse(self._chunk(body, finish_reason, index, so_far, self._logprobs(logprobs, offset)))

    def _logprobs(self, entries: Sequence[TokenLogprob] | None, offset: int) -> dict[str, object] | None:
        if entries is None:
            return None
        if self.chat:
            return chat_logprobs(entries, self.render)
        return completion_logprobs(entries, self.render, offset)

    def usage_chunk(self, total: Usage) -> bytes:
        """The `stream_options.include_usage` chunk: no choices, the request's usage."""
        return sse(self._envelope(self._chunk_object, []) | {"usage": usage(total)})

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _chunk(
        self, body: dict[str, object], finish_reason: str | None, index: int, so_far: Usage | None,
        logprobs: dict[str, object] | None = None,
    ) -> dict[str, object]:  # fmt: skip
        choice = {"index": index} | body | {"logprobs": logprobs, "finish_reason": finish_reason}
        envelope = self._envelope(self._chunk_object, [choice])
        if so_far is not None:
            envelope["usage"] = usage(so_far)
        elif self.include_usage:
            envelope["usage"] = None
        return envelope

    def _envelope(self, object_: str, choices: list[dict[str, object]]) -> dict[str, object]:
        return {
            "id": self.id,
            "object": object_,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
