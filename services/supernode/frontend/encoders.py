"""Response bodies for the two endpoints, whole and as SSE chunks, in OpenAI's shapes.

`usage` carries the context-cache hits: `prompt_tokens_details.cached_tokens` = prompt tokens whose KV came
from the pool instead of being computed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from supernode.frontend.client import StatsLike

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, object]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(stats: StatsLike | None, num_output_tokens: int) -> dict[str, object]:
    """OpenAI `usage`; without stats (a stream cut short) only the counted output tokens are known."""
    prompt = stats.num_prompt_tokens if stats else 0
    output = stats.num_output_tokens if stats else num_output_tokens
    cached = stats.num_cached_tokens if stats else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


@dataclass(slots=True)
class Encoder:
    """Shapes one request's responses; `chat` picks chat.completion over text_completion."""

    model: str
    chat: bool
    include_usage: bool = False
    request_id: str = ""
    created: int = 0

    def start(self, request_id: str) -> None:
        self.request_id = request_id
        self.created = int(time.time())

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{self.request_id}"

    def full(self, text: str, finish_reason: str, stats: StatsLike | None) -> dict[str, object]:
        """The non-streaming body."""
        if self.chat:
            choice: dict[str, object] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        return self._envelope("chat.completion" if self.chat else "text_completion", [choice]) | {
            "usage": usage(stats, 0)
        }

    def first(self) -> bytes:
        """What a stream opens with: the assistant role for chat, nothing for completions."""
        if not self.chat:
            return b""
        return sse(self._chunk({"delta": {"role": "assistant", "content": ""}}, None))

    def delta(self, text: str, finish_reason: str | None) -> bytes:
        """One streamed piece of text (finish_reason on the last)."""
        body: dict[str, object] = {"text": text}
        if self.chat:
            body = {"delta": {"content": text} if text else {}}
        return sse(self._chunk(body, finish_reason))

    def usage_chunk(self, stats: StatsLike | None, num_output_tokens: int) -> bytes:
        """The `stream_options.include_usage` chunk: no choices, the request's usage."""
        return sse(self._envelope(self._chunk_object, []) | {"usage": usage(stats, num_output_tokens)})

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _chunk(self, body: dict[str, object], finish_reason: str | None) -> dict[str, object]:
        choice = {"index": 0} | body | {"logprobs": None, "finish_reason": finish_reason}
        envelope = self._envelope(self._chunk_object, [choice])
        if self.include_usage:
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
