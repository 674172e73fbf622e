"""`logprobs` in OpenAI's two shapes, from the token model's predictive distribution (`core.predictive`).

Completions: `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}`.
Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}`.
Tokens are shown as their text (`render`), as vLLM does. The values are emulated: they describe the
deterministic token model, not DeepSeek-R1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from supernode.core.predictive import TokenLogprob

Render = Callable[[int], str]


def completion_logprobs(
    entries: Sequence[TokenLogprob], render: Render, text_offset: int = 0
) -> dict[str, object]:
    tokens = [render(e.token_id) for e in entries]
    offsets = []
    for token in tokens:
        offsets.append(text_offset)
        text_offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            # the most likely tokens and, as vLLM, the emitted one whether or not it is among them
            {render(t): lp for t, lp in e.top} | {render(e.token_id): e.logprob}
            for e in entries
        ],
        "text_offset": offsets,
    }


def chat_logprobs(entries: Sequence[TokenLogprob], render: Render) -> dict[str, object]:
    def item(token_id: int, logprob: float) -> dict[str, object]:
        text = render(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            item(e.token_id, e.logprob) | {"top_logprobs": [item(t, lp) for t, lp in e.top]} for e in entries
        ]
    }
