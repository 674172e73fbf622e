"""The `supernode` command."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal

import typer
from rich.console import Console

from supernode.launcher import SERVICES, LocalStack, StackConfig

app = typer.Typer(
    help="Supernode: an emulator of CloudMatrix-Infer serving DeepSeek-R1.", no_args_is_help=True
)
console = Console()


@app.command()
def serve(name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (configured by SUPERNODE_* environment variables)."""
    if name not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {name!r}; choose one of {', '.join(SERVICES)}", param_hint="name"
        )
    importlib.import_module(f"supernode.{name}.__main__").main()


@app.command()
def up(
    prefill: int = typer.Option(2, min=1, max=16, help="Prefill instances"),
    decode: int = typer.Option(1, min=1, max=16, help="Decode instances"),
    frontend: bool = typer.Option(True, help="Also start the OpenAI-compatible HTTP frontend"),
    redis_cluster: int = typer.Option(
        0, min=0, max=16, help="Start a Redis Cluster of N masters, each with a replica, not one redis-server"
    ),
    kvpool: int = typer.Option(1, min=1, max=8, help="Stateless KV pool services"),
) -> None:
    """Start redis-server and every service as local processes; Ctrl-C stops them all."""
    if 0 < redis_cluster < 3:
        raise typer.BadParameter("a Redis Cluster needs at least 3 masters", param_hint="--redis-cluster")
    stack = LocalStack(
        StackConfig(
            num_prefill=prefill,
            num_decode=decode,
            with_frontend=frontend,
            redis_cluster=redis_cluster,
            num_kvpool=kvpool,
        )
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stack.start()
        console.print(f"[bold green]Supernode is up[/] (logs in {stack.log_dir})")
        console.print(f"  redis     {stack.redis_url}")
        if stack.redis_cluster is not None:
            cluster = stack.redis_cluster
            console.print(f"  cluster   masters {cluster.masters()} of {len(cluster.nodes)} nodes")
        for proc in stack.procs:
            console.print(f"  {proc.name:<10}{proc.address}")
        console.print("Ctrl-C stops everything.")
        await stop.wait()

    try:
        asyncio.run(run())
    finally:
        console.print("stopping...")
        codes = stack.stop()
        console.print("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()))


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="Text prompt"),
    max_tokens: int = typer.Option(32, min=1, help="Tokens to generate"),
    seed: int = typer.Option(0, help="Token-model seed"),
    router: str = typer.Option("127.0.0.1:50050", envvar="SUPERNODE_ROUTER__ADDRESS", help="Router address"),
    token: str = typer.Option(
        "", envvar="SUPERNODE_ROUTER__AUTH_TOKEN", show_default=False, help="Router bearer token"
    ),
) -> None:
    """Send one prompt to a running router and stream the answer."""
    from supernode.sdk import Client, SupernodeError

    try:
        with Client(router, token=token) as client:
            stats = None
            for chunk in client.generate(prompt, max_tokens=max_tokens, seed=seed):
                console.print(chunk.text, end="", markup=False, highlight=False)
                stats = chunk.stats or stats
    except SupernodeError as err:
        console.print(f"\n[red]{err.code}[/]: {err.message}")
        raise typer.Exit(1) from err
    console.print()
    if stats:
        console.print(
            f"[dim]{stats.num_prompt_tokens} prompt + {stats.num_output_tokens} output tokens, "
            f"{stats.num_cached_tokens} cached; TTFT {stats.ttft_s * 1e3:.1f} ms, "
            f"TPOT {stats.tpot_s * 1e3:.2f} ms (emulated)[/]"
        )


@app.command()
def config(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's configuration table"),
) -> None:
    """Show every setting: environment variable, default and meaning (values in force without --markdown)."""
    from supernode.runtime.config import Settings, settings_rows

    if markdown:
        console.print("| Variable | Default | Meaning |\n|---|---|---|", markup=False, highlight=False)
        for var, default, text in settings_rows(Settings.model_construct()):
            console.print(
                f"| `{var}` | `{default}` | {text} |", markup=False, highlight=False, soft_wrap=True
            )
        return
    for var, value, _ in settings_rows(Settings()):
        console.print(f"{var}={value}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def health(
    address: str = typer.Argument(
        ..., help="host:port of a gRPC service, or http://host:port of the frontend"
    ),
    timeout_s: float = typer.Option(2.0, help="Seconds to wait for the answer"),
) -> None:
    """Exit 0 when the service answers SERVING (grpc.health.v1) or HTTP 200 on /health; for healthchecks."""
    if address.startswith("http"):
        import httpx

        try:
            ok = httpx.get(address.rstrip("/") + "/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            ok = False
    else:
        from supernode.runtime.channels import is_serving, open_channel
        from supernode.runtime.config import get_settings

        async def check() -> bool:
            async with open_channel(address, get_settings()) as channel:
                return await is_serving(channel, timeout_s)

        ok = asyncio.run(check())
    console.print("SERVING" if ok else "NOT SERVING")
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(
    requests: int = typer.Option(40, min=1, max=10_000, help="Requests to send"),
    concurrency: int = typer.Option(16, min=1, max=1024, help="Requests in flight"),
) -> None:
    """Start the local topology, send a demo workload, print a report, stop (what `make run` does)."""
    from supernode.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(requests, concurrency, console)))


def _register_commands() -> None:
    """Commands contributed by other modules: the cost model, the load generator, the fabric tools."""
    from supernode import cli_model, tokenizer_cli
    from supernode.fabric import cli as fabric_cli

    cli_model.register(app)
    fabric_cli.register(app)
    tokenizer_cli.register(app)
    try:  # the load generator needs the `bench` extra (numpy, matplotlib); the service image has not
        from supernode.loadgen import cli as loadgen_cli
        from supernode.loadgen.predict import predict
    except ModuleNotFoundError as err:
        logging.getLogger(__name__).debug("bench commands off: %s (pip install 'supernode[bench]')", err)
        return
    from supernode.sim import cli as sim_cli

    loadgen_cli.register(app, predictor=predict)
    sim_cli.register(app)


_register_commands()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
