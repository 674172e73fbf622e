"""Stop strings over a detokenized stream, as vLLM applies them.

Each chunk's text is appended to the output so far; once `min_tokens` tokens have been generated,
the first occurrence of any stop string ends the choice with finish_reason "stop" and the output is
cut before the stop string (or after it with `include_stop_str_in_output`). While streaming, the
last `len(longest stop) - 1` characters are held back, so text that turns out to start a stop
string is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class StopChecker:
    stop: tuple[str, ...]
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    text: str = ""  # output so far (cut at the stop once found)
    num_tokens: int = 0  # output tokens so far
    num_sent: int = 0  # characters of `text` already released
    is_stopped: bool = False
    _hold: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        longest = max((len(s) for s in self.stop), default=0)
        self._hold = 0 if self.include_stop_str_in_output else max(0, longest - 1)

    def feed(self, text: str, num_tokens: int) -> str:
        """Adds a chunk; returns the text that may be released now (empty once stopped)."""
        if self.is_stopped:
            return ""
        searched_from = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += text
        self.num_tokens += num_tokens
        if self.stop and self.num_tokens >= self.min_tokens:
            self._find_stop(searched_from)
        end = len(self.text) if self.is_stopped else max(self.num_sent, len(self.text) - self._hold)
        return self._release(end)

    def flush(self) -> str:
        """At the end of the stream: everything still held back."""
        return self._release(len(self.text))

    def _find_stop(self, start: int) -> None:
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if not hits:
            return
        index, stop = min(hits)
        self.text = self.text[: index + len(stop)] if self.include_stop_str_in_output else self.text[:index]
        self.is_stopped = True

    def _release(self, end: int) -> str:
        out = self.text[self.num_sent : end]
        self.num_sent = max(self.num_sent, end)
        return out
