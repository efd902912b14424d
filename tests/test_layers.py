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
