"""The chat template: how `/v1/chat/completions` messages become one prompt string for the router.

It follows DeepSeek-R1's own template (tool calls left out), so a shared system prompt is a shared
prompt prefix and hits the context cache exactly as it would in front of the real model:

    <｜begin▁of▁sentence｜>{system}
    <｜User｜>{user}
    <｜Assistant｜>{assistant}<｜end▁of▁sentence｜>
    <｜tool▁output▁begin｜>{tool}<｜tool▁output▁end｜>
    ...
    <｜Assistant｜><think>\\n

(written one piece per line here; the rendered prompt has no newlines between pieces).

- `system` and `developer` messages, wherever they appear, are joined with a blank line ("\\n\\n") and
  placed right after the begin-of-sentence marker, before every other message.
- `user`, `assistant` and `tool` messages follow in order, each wrapped as shown.
- An assistant message keeps only the text after its last `</think>`, as DeepSeek-R1's template does.
- Content given as a list of parts is the parts' `text` joined with "\\n" (only `text` parts exist).
- The prompt always ends with the generation prompt `<｜Assistant｜><think>\\n`.

The router's byte-level tokenizer turns each marker into its UTF-8 bytes (e.g. `<｜User｜>` is 10 tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
TOOL_BEGIN = "<｜tool▁output▁begin｜>"
TOOL_END = "<｜tool▁output▁end｜>"
GENERATION_PROMPT = f"{ASSISTANT}<think>\n"
SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class Turn:
    """One chat message with its content already flattened to text."""

    role: str  # "system" | "developer" | "user" | "assistant" | "tool"
    content: str  # the message text ("" for a null content)


def render(turns: Sequence[Turn]) -> str:
    """The prompt for `turns` (see the module docstring for the template)."""
    system = "\n\n".join(t.content for t in turns if t.role in SYSTEM_ROLES)
    parts = [BOS, system]
    for turn in turns:
        if turn.role == "user":
            parts += (USER, turn.content)
        elif turn.role == "assistant":
            parts += (ASSISTANT, turn.content.rsplit("</think>", 1)[-1], EOS)
        elif turn.role == "tool":
            parts += (TOOL_BEGIN, turn.content, TOOL_END)
    parts.append(GENERATION_PROMPT)
    return "".join(parts)
