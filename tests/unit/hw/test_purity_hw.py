"""hw/ imports only the standard library's pure modules and other hw modules."""

from __future__ import annotations

import ast
from pathlib import Path

HW = Path(__file__).resolve().parents[3] / "services" / "supernode" / "hw"
ALLOWED = {"__future__", "math", "dataclasses", "typing", "functools", "collections", "heapq", "enum"}


def test_hw_imports_are_pure() -> None:
    for path in sorted(HW.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                ok = mod.split(".")[0] in ALLOWED or mod == "supernode.hw" or mod.startswith("supernode.hw.")
                assert ok, f"{path.name} imports {mod}"
