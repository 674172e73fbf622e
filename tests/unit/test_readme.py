"""The README stays true: its configuration table is the settings, and its commands exist."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from supernode.cli import app
from supernode.runtime.config import known_env_vars

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings():
    table = CliRunner().invoke(app, ["config", "--markdown"], terminal_width=400).output
    for line in table.splitlines()[2:]:
        assert line in README, (
            f"README's configuration table is stale: run `supernode config --markdown`\n{line}"
        )
    for var in known_env_vars():
        assert f"`{var}`" in README


def test_make_targets_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "help", "protos", "protos-check", "lint", "up", "down", "bench"):
        assert f"\n{target}:" in makefile or makefile.startswith(f"{target}:"), target
