"""The import graph has layers and no arrow points up (see README, Architecture).

Every ``import`` and ``from ... import`` in the package (module level, inside
functions and under ``TYPE_CHECKING`` alike) is read with :mod:`ast`; an
import of a higher layer fails the test with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO_ROOT

#: Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "spoofwatch.errors",
        "spoofwatch.constants",
        "spoofwatch.paths",
        "spoofwatch.stamps",
        "spoofwatch.audio",
    ),
    ("spoofwatch.stream",),
    ("spoofwatch.calibration",),
    ("spoofwatch.model",),
    ("spoofwatch.commands", "spoofwatch.cli", "spoofwatch.__main__", "spoofwatch"),
]
#: Within ``spoofwatch.stream``: the Sans-I/O core never imports its adapters.
STREAM_CORE = (
    "spoofwatch.stream.engine",
    "spoofwatch.stream.windower",
    "spoofwatch.stream.gate",
    "spoofwatch.stream.policy",
    "spoofwatch.stream.events",
    "spoofwatch.stream.ring",
    "spoofwatch.stream.codecs",
    "spoofwatch.stream.driver",
    "spoofwatch.stream.protocol",
    "spoofwatch.stream.scoring",
)
STREAM_ADAPTERS = (
    "spoofwatch.stream.server",
    "spoofwatch.stream.sources",
    "spoofwatch.stream.client",
    "spoofwatch.stream.vad",  # the VAD model on ONNX Runtime; the gate takes any VadModel
)
FOLDERS = {
    "model": "spoofwatch.model",
    "stream": "spoofwatch.stream",
    "calibration": "spoofwatch.calibration",
}


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """Index of the most specific layer prefix matching ``module``."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _in(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((REPO_ROOT / "spoofwatch").glob("*.py")):
        files["spoofwatch" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    for path in sorted((REPO_ROOT / "spoofwatch" / "commands").glob("*.py")):
        files["spoofwatch.commands" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    for folder, package in FOLDERS.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([package, *parts])] = path
    return files


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in the file."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from . import x`` / ``from pkg import submodule`` name modules too.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def upward_imports(files: dict[str, Path]) -> list[str]:
    problems = []
    for module, path in files.items():
        own = layer_of(module)
        assert own is not None, f"{module} is in no layer: add it to LAYERS"
        for line, target in imports_of(module, path):
            if not _in(target, "spoofwatch"):
                continue
            where = f"{path.name}:{line}: {module} imports {target}"
            layer = layer_of(target)
            if layer is not None and layer > own:
                problems.append(f"{where} (layer {layer} > {own})")
            core = any(_in(module, c) for c in STREAM_CORE)
            if core and any(_in(target, a) for a in STREAM_ADAPTERS):
                problems.append(f"{where} (the stream core imports an adapter)")
    return problems


#: Libraries the Sans-I/O stream core never imports: devices, sockets, event
#: loops, threads, clocks and models belong to the adapters that feed it.
FORBIDDEN_IN_CORE = (
    "sounddevice",
    "websockets",
    "anyio",
    "asyncio",
    "socket",
    "threading",
    "time",
    "onnxruntime",
    "torch",
)


def core_io_imports(files: dict[str, Path]) -> list[str]:
    found = {
        f"{path.name}:{line}: {module} imports {lib}"
        for module, path in files.items()
        if any(_in(module, c) for c in STREAM_CORE)
        for line, target in imports_of(module, path)
        for lib in FORBIDDEN_IN_CORE
        if _in(target, lib)
    }
    return sorted(found)


def runtime_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports when it runs: at module level
    or in a function, not under ``if TYPE_CHECKING:`` (type-only imports are
    how an annotation names a class without a dependency)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text("utf-8"), str(path))
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If)
            and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for stmt in block.body
            for node in ast.walk(stmt)
        }
        lines = {
            node.lineno for node in ast.walk(tree) if id(node) in typing_only and hasattr(node, "lineno")
        }
        targets = set()
        for line, target in imports_of(module, path):
            while target and target not in files:  # ``pkg.module.name`` -> ``pkg.module``
                target = target.rpartition(".")[0]
            if target and target != module and line not in lines:
                targets.add(target)
        graph[module] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_even_through_imports_in_functions() -> None:
    """Imports inside functions hid a cycle (runtime -> card -> export ->
    quantize -> runtime); tools that follow layers need none."""
    assert import_cycles(runtime_graph(module_files())) == []


def test_the_stream_core_imports_no_io() -> None:
    assert core_io_imports(module_files()) == []


def test_the_cycle_and_io_checks_can_fail(tmp_path: Path) -> None:
    planted = tmp_path / "runtime.py"
    planted.write_text("def f():\n    from .scorers import build_scorer\n")
    files = {**module_files(), "spoofwatch.model.runtime": planted}
    assert any(
        {"spoofwatch.model.runtime", "spoofwatch.model.scorers"} <= set(cycle)
        for cycle in import_cycles(runtime_graph(files))
    )
    typed = tmp_path / "typed.py"
    typed.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .scorers import build_scorer\n"
    )
    assert import_cycles(runtime_graph({**module_files(), "spoofwatch.model.runtime": typed})) == []
    io = tmp_path / "windower.py"
    io.write_text("import time\nfrom anyio import sleep\n")
    found = core_io_imports({**module_files(), "spoofwatch.stream.windower": io})
    assert found == [
        "windower.py:1: spoofwatch.stream.windower imports time",
        "windower.py:2: spoofwatch.stream.windower imports anyio",
    ]


def test_no_upward_imports() -> None:
    assert upward_imports(module_files()) == []


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The test above can fail: an import of calibration planted in stream is reported."""
    planted = tmp_path / "engine.py"
    planted.write_text("from spoofwatch.calibration.calfile import Calibration\nfrom .server import app\n")
    problems = upward_imports({**module_files(), "spoofwatch.stream.engine": planted})
    assert any("imports spoofwatch.calibration.calfile (layer 2 > 1)" in p for p in problems)
    assert any("spoofwatch.stream.server" in p and "adapter" in p for p in problems)


def test_every_folder_has_an_import_guard() -> None:
    for folder, package in {**FOLDERS, "configs": "spoofwatch.configs"}.items():
        text = (REPO_ROOT / folder / "__init__.py").read_text("utf-8")
        assert f'if __name__ != "{package}":' in text and "raise ImportError" in text, folder
