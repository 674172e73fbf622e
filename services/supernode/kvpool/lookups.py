"""Several prefixes looked up at once: one existence check over their keys, repeats removed.

Prompts that share a prefix (a system prompt, a conversation's history) share its leading block keys,
so a worker's lookups of one moment ask for far fewer distinct keys than they list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence


def distinct_keys(prefixes: Sequence[Sequence[str]]) -> list[str]:
    """Every key of `prefixes` once, in first-seen order."""
    return list(dict.fromkeys(key for keys in prefixes for key in keys))


def leading_runs(prefixes: Sequence[Sequence[str]], present: set[str]) -> list[int]:
    """Per prefix, how many of its leading keys are in `present`."""
    runs = []
    for keys in prefixes:
        n = 0
        while n < len(keys) and keys[n] in present:
            n += 1
        runs.append(n)
    return runs


async def lookup_many(
    prefixes: Sequence[Sequence[str]], exists_many: Callable[[list[str]], Awaitable[list[bool]]]
) -> tuple[list[int], int]:
    """(leading cached run per prefix, distinct keys checked) with one `exists_many` call."""
    keys = distinct_keys(prefixes)
    found = await exists_many(keys) if keys else []
    present = {key for key, ok in zip(keys, found, strict=True) if ok}
    return leading_runs(prefixes, present), len(keys)
