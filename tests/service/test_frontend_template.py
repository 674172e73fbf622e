"""The documented chat template (pure; lives here with the other frontend tests)."""

from __future__ import annotations

from supernode.frontend.chat_template import Turn, render


def test_template_matches_the_documented_layout() -> None:
    prompt = render(
        [
            Turn("system", "Be brief."),
            Turn("user", "Hi"),
            Turn("assistant", "<think>hmm</think>Hello"),
            Turn("tool", "42"),
            Turn("developer", "Use metric units."),
            Turn("user", "More"),
        ]
    )
    assert prompt == (
        "<｜begin▁of▁sentence｜>Be brief.\n\nUse metric units."
        "<｜User｜>Hi<｜Assistant｜>Hello<｜end▁of▁sentence｜>"
        "<｜tool▁output▁begin｜>42<｜tool▁output▁end｜>"
        "<｜User｜>More<｜Assistant｜><think>\n"
    )


def test_shared_system_prompt_is_a_shared_prefix() -> None:
    one = render([Turn("system", "S" * 500), Turn("user", "a")])
    two = render([Turn("system", "S" * 500), Turn("user", "b")])
    assert one[:520] == two[:520] and one != two


def test_no_system_message() -> None:
    assert render([Turn("user", "x")]) == "<｜begin▁of▁sentence｜><｜User｜>x<｜Assistant｜><think>\n"
