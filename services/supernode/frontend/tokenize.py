"""vLLM's `/tokenize` and `/detokenize`: the server's own tokenizer, the one the router counts with.

POST /tokenize {"prompt": str} or {"messages": [...]} (rendered with the chat template), optional
"model" and "return_token_strs" -> {"count", "max_model_len", "tokens", "token_strs"}.
POST /detokenize {"tokens": [int, ...]} -> {"prompt": str} (special tokens kept, as vLLM does).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from supernode.core.tokenizer import Tokenizer
from supernode.frontend import chat_template
from supernode.frontend.schemas import ChatMessage
from supernode.runtime.errors import invalid

MAX_DETOKENIZE_IDS = 1_000_000


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True  # accepted; the DeepSeek tokenizer adds none to plain text
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    tokens: list[int] = Field(max_length=MAX_DETOKENIZE_IDS)


def tokenize(body: TokenizeRequest, tokenizer: Tokenizer, max_model_len: int) -> dict[str, Any]:
    if (body.prompt is None) == (body.messages is None):
        raise invalid("prompt", "give exactly one of prompt or messages")
    if body.messages is not None:
        text = chat_template.render([chat_template.Turn(m.role, m.text()) for m in body.messages])
    else:
        text = body.prompt or ""
    ids = tokenizer.encode(text)
    out: dict[str, Any] = {"count": len(ids), "max_model_len": max_model_len, "tokens": ids}
    if body.return_token_strs:
        out["token_strs"] = [tokenizer.token_text(i) for i in ids]
    return out


def detokenize(body: DetokenizeRequest, tokenizer: Tokenizer) -> dict[str, Any]:
    bad = next((t for t in body.tokens if not 0 <= t < tokenizer.vocab_size), None)
    if bad is not None:
        raise invalid("tokens", f"token {bad} is outside the vocabulary [0, {tokenizer.vocab_size})")
    return {"prompt": tokenizer.decode(body.tokens, skip_special_tokens=False)}
