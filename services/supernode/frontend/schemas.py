"""OpenAI request bodies for `/v1/completions` and `/v1/chat/completions`, and what the router is asked.

Bodies are validated strictly (a string is not an integer); unknown fields are ignored, as vLLM does.
Three kinds of parameter, each listed once:
- supported: model, prompt / messages, max_tokens (chat: max_completion_tokens; default: the rest of
  the context window), stream, stream_options (include_usage, continuous_usage_stats), seed, n (up to
  `frontend.max_n`), stop, stop_token_ids, include_stop_str_in_output, ignore_eos (default false, as
  vLLM), min_tokens, logprobs / top_logprobs (the token model's emulated distribution);
- `IGNORED`: accepted (and range-checked) but without effect, because they reshape a sampling
  distribution the deterministic token model does not have;
- `REJECTED` (400 naming the parameter): they promise a property of the output the emulator cannot
  deliver, so accepting them would be a silent lie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from supernode.core.predictive import MAX_TOP
from supernode.frontend import chat_template
from supernode.runtime.errors import invalid

MAX_SEED = 2**64 - 1  # the proto's uint64
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
IGNORED = (
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "user", "skip_special_tokens", "spaces_between_special_tokens",
)  # fmt: skip
REJECTED = (
    "prompt_logprobs", "echo", "suffix", "best_of", "tools", "tool_choice",
    "functions", "response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
    "structured_outputs",
)  # fmt: skip


class RouterKwargs(TypedDict):
    """The router client's `generate` arguments that come from a request's parameters."""

    token_ids: tuple[int, ...] | None
    max_tokens: int
    seed: int
    stop_token_ids: tuple[int, ...]
    ignore_eos: bool
    min_tokens: int
    long_context: str


@dataclass(frozen=True, slots=True)
class GenerateParams:
    """One request as the router and the frontend's stop handling see it."""

    prompt: str | None  # text prompt, or None when token_ids is given
    token_ids: tuple[int, ...] | None  # prompt as token ids
    num_prompt_tokens: int  # prompt length as the router will count it (tokens)
    max_tokens: int  # tokens to generate at most
    seed: int  # token-model seed of the first choice (0 = service default); choice i uses seed + i
    stop_token_ids: tuple[int, ...]  # generation stops after any of these
    ignore_eos: bool  # end-of-sequence does not stop generation
    min_tokens: int = 0  # no stop (EOS, stop string) before this many output tokens
    stop: tuple[str, ...] = ()  # stop strings, checked against the detokenized output
    include_stop_str_in_output: bool = False
    n: int = 1  # choices
    continuous_usage_stats: bool = False  # every streamed chunk carries usage so far
    prompt_ids: tuple[int, ...] = ()  # the prompt as the router will tokenize it (for logprobs)
    logprobs: int | None = None  # alternatives per token in `logprobs` (None = no logprobs)
    long_context: str = ""  # over-window prompts: reject | truncate | xl3m ("" = the router's setting)

    def router_kwargs(self, index: int) -> RouterKwargs:
        """The SDK `generate` arguments of choice `index`."""
        return {
            "token_ids": self.token_ids,
            "max_tokens": self.max_tokens,
            "seed": self.seed + index,
            "stop_token_ids": self.stop_token_ids,
            "ignore_eos": self.ignore_eos,
            "min_tokens": self.min_tokens,
            "long_context": self.long_context,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """What bounds a request: the router's max_tokens limit, the context window, the choice count."""

    max_tokens: int
    max_model_len: int
    max_n: int
    long_context: str = "reject"  # the router's policy for prompts over the window


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False  # send a last chunk with `usage` and no choices
    continuous_usage_stats: bool = False  # every chunk carries the usage so far


class _Sampling(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    # Accepted without effect (IGNORED); typed so a wrong type or range is still a 400.
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    long_context: Literal["reject", "truncate", "xl3m"] | None = None  # extension: over-window prompts

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def _reject(self) -> None:
        """InvalidArgumentError for the first REJECTED parameter that asks for something."""
        extra = self.model_extra or {}
        for name in REJECTED:
            value = extra.get(name)
            if value is None or value is False or value == [] or value == "":
                continue
            if name == "best_of" and value == 1:
                continue
            if name == "response_format" and isinstance(value, dict) and value.get("type") == "text":
                continue
            if name == "tool_choice" and value == "none":
                continue
            raise invalid(name, f"{name} is not supported by the emulator (see README, HTTP API)")

    def _params(
        self, prompt: str | None, token_ids: tuple[int, ...] | None, prompt_ids: tuple[int, ...],
        max_tokens: int, limits: Limits, logprobs: int | None = None,
    ) -> GenerateParams:  # fmt: skip
        self._reject()
        if self.n > limits.max_n:
            raise invalid("n", f"must be between 1 and {limits.max_n}, got {self.n}")
        stop_ids = tuple(self.stop_token_ids or ())
        if any(not 0 <= t < 2**32 for t in stop_ids):
            raise invalid("stop_token_ids", "each id must be in [0, 2^32)")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if len(stop) > MAX_STOP_STRINGS or any(not 0 < len(s) <= MAX_STOP_CHARS for s in stop):
            raise invalid(
                "stop", f"at most {MAX_STOP_STRINGS} strings, each 1 to {MAX_STOP_CHARS} characters"
            )
        if self.min_tokens > max_tokens:
            raise invalid("min_tokens", f"must be <= max_tokens ({max_tokens}), got {self.min_tokens}")
        continuous = self.stream_options is not None and self.stream_options.continuous_usage_stats
        return GenerateParams(
            prompt=prompt, token_ids=token_ids, num_prompt_tokens=len(prompt_ids), prompt_ids=prompt_ids,
            logprobs=logprobs,
            max_tokens=max_tokens, seed=self.seed or 0, stop_token_ids=stop_ids,
            ignore_eos=self.ignore_eos, min_tokens=self.min_tokens, stop=stop,
            include_stop_str_in_output=self.include_stop_str_in_output, n=self.n,
            continuous_usage_stats=continuous, long_context=self.long_context or "",
        )  # fmt: skip


class CompletionRequest(_Sampling):
    prompt: Any  # str | list[int] | [str] | [list[int]]; checked by `_prompt` for a clear message
    max_tokens: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP)  # alternatives per token (emulated)

    def to_params(self, limits: Limits, encode: Callable[[str], list[int]]) -> GenerateParams:
        """The router call, or InvalidArgumentError naming the offending parameter; `encode` is the
        server's tokenizer."""
        prompt, token_ids = _prompt(self.prompt)
        ids = token_ids if token_ids is not None else tuple(encode(prompt or ""))
        max_tokens = _max_tokens("max_tokens", self.max_tokens, len(ids), "prompt", limits, self.long_context)
        return self._params(prompt, token_ids, ids, max_tokens, limits, self.logprobs)


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
    logprobs: bool = False  # the emitted tokens' logprobs (emulated)
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP)  # alternatives per token, with logprobs

    def to_params(self, limits: Limits, encode: Callable[[str], list[int]]) -> GenerateParams:
        """The router call (messages rendered by `chat_template`), or InvalidArgumentError."""
        field, value = "max_completion_tokens", self.max_completion_tokens
        if value is None:
            field, value = "max_tokens", self.max_tokens
        if self.top_logprobs is not None and not self.logprobs:
            raise invalid("top_logprobs", "needs logprobs: true")
        prompt = chat_template.render([chat_template.Turn(m.role, m.text()) for m in self.messages])
        ids = tuple(encode(prompt))
        max_tokens = _max_tokens(field, value, len(ids), "messages", limits, self.long_context)
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._params(prompt, None, ids, max_tokens, limits, logprobs)


def _max_tokens(
    field: str, value: int | None, num_prompt: int, prompt_field: str, limits: Limits, policy: str | None
) -> int:
    """The asked limit, or (as vLLM) the rest of the context window, at most the router's limit. A
    prompt over the window is the router's to shorten under `truncate` or `xl3m`; its default is then
    1/16 of the window (the room the shortened prompt leaves for the answer)."""
    room = limits.max_model_len - num_prompt
    if room < 1 and (policy or limits.long_context) != "reject":
        room = max(1, limits.max_model_len // 16)
    if room < 1:
        raise invalid(
            prompt_field,
            f"{num_prompt} prompt tokens leave no room in the {limits.max_model_len}-token context",
        )
    if value is None:
        return min(room, limits.max_tokens)
    if value > limits.max_tokens:
        raise invalid(field, f"must be <= {limits.max_tokens}, got {value}")
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
