"""The configured tokenizer and end-of-sequence, between the settings, the protos and `core`.

The router tokenizes with `tokenizer(settings)` and, for a request that does not ignore EOS, plans
where the token model ends it (`plan_request_eos`): the natural output length drawn for the prompt
and seed (`SUPERNODE_TOKENS__OUTPUT_LEN`), never before `min_tokens`. The plan travels in
`Sampling.eos_token_id` / `eos_position` to the decode worker, whose token model emits the
end-of-sequence id there (`eos_plan`); the id is also a stop id, so the sequence finishes with
"stop". `max_tokens` is lowered to the natural length when that is shorter, so decode reserves
exactly the KV the request will use.
"""

from __future__ import annotations

from supernode.core import tokens
from supernode.core.tokenizer import Tokenizer, load
from supernode.runtime.config import Settings
from supernode.v1 import common_pb2, router_pb2


def tokenizer(settings: Settings) -> Tokenizer:
    """The tokenizer `SUPERNODE_TOKENS__TOKENIZER` names (loaded once per process)."""
    return load(settings.tokens.tokenizer)


def plan_request_eos(
    request: router_pb2.GenerateRequest, prompt: list[int], eos_token_id: int, settings: Settings
) -> None:
    """Fills the request's end-of-sequence plan in place (nothing when it ignores EOS)."""
    sampling = request.sampling
    if sampling.ignore_eos:
        return
    lengths = tokens.OutputLengths.parse(settings.tokens.output_len)
    plan = tokens.plan_eos(prompt, sampling.seed, lengths, eos_token_id, sampling.min_tokens)
    sampling.eos_token_id = plan.token_id
    sampling.eos_position = plan.position
    if plan.token_id not in sampling.stop_token_ids:
        sampling.stop_token_ids.append(plan.token_id)
    request.max_tokens = min(request.max_tokens, plan.position - len(prompt) + 1)


def eos_plan(sampling: common_pb2.Sampling) -> tokens.EosPlan | None:
    """The token model's end-of-sequence plan carried by `sampling` (None: the model never ends)."""
    if sampling.ignore_eos or sampling.eos_position == 0:
        return None
    return tokens.EosPlan(sampling.eos_token_id, sampling.eos_position)
