from __future__ import annotations

import asyncio

import pytest

from supernode.launcher import LocalStack, StackConfig


def stack_for(tmp_path_factory, **env: str) -> LocalStack:
    config = StackConfig(
        num_prefill=2,
        num_decode=1,
        ephemeral_ports=True,
        log_dir=tmp_path_factory.mktemp("stack"),
        env={"SUPERNODE_RUNTIME__DRAIN_TIMEOUT_S": "60", **env},
    )
    return LocalStack(config)


async def start_stack(tmp_path_factory, **env: str) -> LocalStack:
    stack = stack_for(tmp_path_factory, **env)
    try:
        await stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, stack_env):
    s = stack_for(tmp_path_factory, **stack_env)
    try:
        asyncio.run(s.start())
    except BaseException:
        s.stop()
        raise
    yield s
    s.stop()
