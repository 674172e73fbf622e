"""hw/ and core/ decide; they do no I/O, no asyncio, no clock, no unseeded randomness (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "services" / "supernode"
FORBIDDEN_MODULES = {
    "asyncio",
    "time",
    "os",
    "socket",
    "subprocess",
    "threading",
    "grpc",
    "redis",
    "httpx",
    "requests",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "datetime",
    "pathlib",
    "shutil",
    "tempfile",
    "sys",
}
FORBIDDEN_CALLS = {"open", "print", "input"}
UNSEEDED_RANDOM = {
    "random",
    "randint",
    "choice",
    "shuffle",
    "uniform",
    "gauss",
    "randrange",
    "sample",
    "seed",
}


def pure_files() -> list[Path]:
    return sorted(p for d in ("hw", "core") for p in (PKG / d).glob("*.py"))


def problems_in(source: str) -> list[str]:
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module]
            if module.startswith("supernode.") and not module.startswith(("supernode.hw", "supernode.core")):
                problems.append(f"imports {module}")
        else:
            names = []
        problems += [f"imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_CALLS:
                problems.append(f"calls {fn.id}()")
            if (
                isinstance(fn, ast.Attribute)
                and isinstance(fn.value, ast.Name)
                and fn.value.id == "random"
                and fn.attr in UNSEEDED_RANDOM
            ):
                problems.append(f"calls random.{fn.attr}() (use an injected random.Random(seed))")
    return problems


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module(path: Path) -> None:
    problems = problems_in(path.read_text())
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_check_catches_impurity() -> None:
    bad = (
        "import asyncio\nimport random\nfrom supernode.runtime import clock\nx = random.random()\nprint(x)\n"
    )
    assert problems_in(bad) == [
        "imports asyncio",
        "imports supernode.runtime",
        "calls random.random() (use an injected random.Random(seed))",
        "calls print()",
    ]
    assert problems_in("import random\nrng = random.Random(3)\nrng.random()\n") == []
