"""The live stack a fidelity scenario runs on, and reading its workers' metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from supernode.launcher import LocalStack, StackConfig
from supernode.processes import free_port


async def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics, each sample name summed over its labels."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def start(env: dict[str, str], num_prefill: int) -> tuple[LocalStack, dict[str, int]]:
    """Redis and every service as processes, one decode instance; the metrics ports of the decode
    worker and (when there is one) the prefill worker."""
    ports = {"decode": free_port(), "prefill": free_port()}
    stack = LocalStack(
        StackConfig(
            num_prefill=num_prefill,
            num_decode=1,
            ephemeral_ports=True,
            env={
                **env,
                "SUPERNODE_DECODE__METRICS_PORT": str(ports["decode"]),
                "SUPERNODE_PREFILL__METRICS_PORT": str(ports["prefill"]) if num_prefill == 1 else "0",
                "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING",
                # The paper's points are bursts meant to queue (the last 4K prompt of a prefill burst
                # waits ~10 emulated s): no queueing-delay refusals, whatever the time scale.
                "SUPERNODE_PREFILL__MAX_QUEUE_DELAY_S": "0",
            },
        )
    )
    await stack.start()
    return stack, ports
