"""The shape of the code: no import cycles, and the pure cores stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "edge", "broker", "chatconfig", "chatclient")
# Modules that decide without doing: no sockets, no event loop, no ZeroMQ.
PURE = ("protocol.websocket", "protocol.handshake", "protocol.frames", "protocol.chats",
        "edge.rooms", "edge.session", "edge.probes", "chatclient.core", "chatclient.roster",
        "protocol.shards", "broker.sharding", "bench.delayline")
IMPURE_IMPORTS = ("asyncio", "socket", "zmq", "aiohttp", "selectors")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module imported, those only for type checking included: a cycle is a cycle."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {
        module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
    }
    return {
        name: {m for m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_import_cycles() -> None:
    deps = graph()
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(deps.get(name, ())):
            visit(dep, [*stack, name])
        done.add(name)

    for name in sorted(deps):
        visit(name, [])


def test_pure_modules_import_no_io() -> None:
    for name in PURE:
        path = ROOT / (name.replace(".", "/") + ".py")
        used = {m.split(".")[0] for m in imports(path)}
        assert not used & set(IMPURE_IMPORTS), (name, used & set(IMPURE_IMPORTS))
