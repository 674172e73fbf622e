"""`supernode up --redis-cluster N` refuses a cluster Redis cannot form, before starting anything."""

from __future__ import annotations

from typer.testing import CliRunner

from supernode.cli import app


def test_up_refuses_fewer_than_three_masters():
    result = CliRunner().invoke(app, ["up", "--redis-cluster", "2"], terminal_width=200)
    assert result.exit_code == 2
    assert "--redis-cluster" in result.output and "at least 3 masters" in result.output


def test_up_lists_the_cluster_options():
    result = CliRunner().invoke(app, ["up", "--help"], terminal_width=200)
    assert "--redis-cluster" in result.output and "--kvpool" in result.output
