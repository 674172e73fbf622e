"""OpenAI request bodies for `/v1/completions` and `/v1/chat/completions`, and what the router is asked.

Bodies are validated strictly (a string is not an integer); unknown fields are ignored, as vLLM does.
Fields OpenAI defines that the emulator cannot honour (`n` > 1, `stop` strings, `logprobs`, `echo`,
`suffix`, `best_of` > 1, `tools`) are rejected with a 400 naming the parameter rather than silently
dropped. Extensions (from vLLM): `ignore_eos` (default true: exactly `max_tokens` tokens come back) and
`stop_token_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from supernode.frontend import chat_template
from supernode.runtime.errors import invalid

DEFAULT_MAX_TOKENS = 16  # OpenAI's completions default; used for chat too, where OpenAI has no bound
MAX_SEED = 2**64 - 1  # the proto's uint64


@dataclass(frozen=True, slots=True)
class GenerateParams:
    """One router `Generate` call (the SDK's keyword arguments)."""

    prompt: str | None  # text prompt, or None when token_ids is given
    token_ids: tuple[int, ...] | None  # prompt as token ids
    max_tokens: int  # tokens to generate
    seed: int  # token-model seed (0 = service default)
    temperature: float  # accepted, no effect on emulated tokens
    top_p: float  # accepted, no effect on emulated tokens
    stop_token_ids: tuple[int, ...]  # generation stops after any of these
    ignore_eos: bool  # end-of-sequence does not stop generation
    long_context: str = ""  # over-window prompts: reject | truncate | xl3m ("" = the router's setting)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False  # send a last chunk with `usage` and no choices


class _Sampling(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = True
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)  # accepted, no effect
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)  # accepted, no effect
    user: str | None = None  # accepted, no effect
    long_context: Literal["reject", "truncate", "xl3m"] | None = None  # extension: over-window prompts

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def _params(
        self, prompt: str | None, token_ids: tuple[int, ...] | None, max_tokens: int
    ) -> GenerateParams:
        if self.stop:
            raise invalid("stop", "stop strings are not supported; use stop_token_ids")
        stop_ids = tuple(self.stop_token_ids or ())
        if any(not 0 <= t < 2**32 for t in stop_ids):
            raise invalid("stop_token_ids", "each id must be in [0, 2^32)")
        return GenerateParams(
            prompt=prompt,
            token_ids=token_ids,
            max_tokens=max_tokens,
            seed=self.seed or 0,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop_token_ids=stop_ids,
            ignore_eos=self.ignore_eos,
            long_context=self.long_context or "",
        )


class CompletionRequest(_Sampling):
    prompt: Any  # str | list[int] | [str] | [list[int]]; checked by `_prompt` for a clear message
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: str | None = None

    def to_params(self, max_tokens_limit: int) -> GenerateParams:
        """The router call, or InvalidArgumentError naming the offending parameter."""
        if self.echo:
            raise invalid("echo", "echo is not supported")
        if self.logprobs:
            raise invalid("logprobs", "logprobs are not supported")
        if self.suffix:
            raise invalid("suffix", "suffix is not supported")
        prompt, token_ids = _prompt(self.prompt)
        return self._params(prompt, token_ids, _max_tokens("max_tokens", self.max_tokens, max_tokens_limit))


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None

    def to_params(self, max_tokens_limit: int) -> GenerateParams:
        """The router call (messages rendered by `chat_template`), or InvalidArgumentError."""
        if self.logprobs:
            raise invalid("logprobs", "logprobs are not supported")
        if self.tools:
            raise invalid("tools", "tool calling is not supported")
        field, value = "max_completion_tokens", self.max_completion_tokens
        if value is None:
            field, value = "max_tokens", self.max_tokens
        max_tokens = _max_tokens(field, value if value is not None else DEFAULT_MAX_TOKENS, max_tokens_limit)
        prompt = chat_template.render([chat_template.Turn(m.role, m.text()) for m in self.messages])
        return self._params(prompt, None, max_tokens)


def _max_tokens(field: str, value: int | None, limit: int) -> int:
    value = DEFAULT_MAX_TOKENS if value is None else value
    if value > limit:
        raise invalid(field, f"must be <= {limit}, got {value}")
    return value


def _prompt(value: object) -> tuple[str | None, tuple[int, ...] | None]:
    """(text, None) or (None, token ids) for one prompt; batches of one are unwrapped."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise invalid("prompt", "must not be empty")
        return value, None
    if isinstance(value, list) and value and all(_is_token(t) for t in value):
        return None, tuple(value)
    if isinstance(value, list) and len(value) > 1 and all(isinstance(p, str | list) for p in value):
        raise invalid("prompt", "batched prompts are not supported; send one prompt per request")
    raise invalid("prompt", "must be a non-empty string or a non-empty list of token ids")


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32
