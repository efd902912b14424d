"""Packaging: the wheel's namespaced layout and the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import REPO_ROOT


def _copy_sources(dest: Path) -> Path:
    """What the build reads, copied: pyproject, README, the package and the top-level
    folders its links name. A build in place writes build/ and an egg-info into the
    checkout, which other runs (other worktrees, other tests) may be reading."""
    shutil.copytree(REPO_ROOT / "spoofwatch", dest / "spoofwatch", symlinks=True, ignore=_NO_CACHES)
    for link in (REPO_ROOT / "spoofwatch").iterdir():
        if link.is_symlink():  # e.g. spoofwatch/model -> ../model
            target = link.resolve()
            shutil.copytree(target, dest / target.relative_to(REPO_ROOT), ignore=_NO_CACHES)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


_NO_CACHES = shutil.ignore_patterns("__pycache__")


def test_wheel_layout(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            # Nothing from an index (and no self-version check against it): loopback only.
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path),
            str(_copy_sources(tmp_path / "src")),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("spoofwatch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "spoofwatch/__init__.py",
        "spoofwatch/cli.py",
        "spoofwatch/model/aasist.py",
        "spoofwatch/stream/engine.py",
        "spoofwatch/calibration/metrics.py",
        "spoofwatch/configs/models/aasist-l.toml",
        "spoofwatch/configs/calibration/aasist-l.toml",
    ):
        assert expected in names, expected
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"spoofwatch", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    # The weights each model config names ship with their licence; no other model file does.
    from spoofwatch.constants import MODEL_NAMES
    from spoofwatch.model.config import load_model_config

    packaged = {f"spoofwatch/weights/{load_model_config(m).weights_file}" for m in MODEL_NAMES}
    assert {"spoofwatch/weights/AASIST-L.pth", "spoofwatch/weights/AASIST.pth"} <= packaged
    assert {n for n in names if n.endswith((".onnx", ".pth"))} == packaged
    assert {"spoofwatch/weights/LICENSE", "spoofwatch/weights/NOTICE"} <= set(names)
    assert "spoofwatch/stream/server/web/index.html" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spoofwatch = spoofwatch.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    _check_installed_defaults(wheel, tmp_path / "site")


def _check_installed_defaults(wheel: Path, site: Path) -> None:
    """Default files that commands find inside the installed package, not in a checkout."""
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import spoofwatch, sys;"
        "from spoofwatch.commands.corpus_cmds import DEFAULT_CORPUS_CONFIG as c;"
        "print(spoofwatch.__file__); print(c); print(c.is_file())"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=site,
    ).stdout.splitlines()
    package_file, config, exists = out
    assert Path(package_file).is_relative_to(site), out  # the wheel's copy, not the checkout's
    assert Path(config).is_relative_to(site.resolve()) and exists == "True", out


def test_console_script_and_module(tmp_path: Path) -> None:
    # The script installed beside the interpreter running the tests.
    exe = str(Path(sys.executable).with_name("spoofwatch"))
    assert Path(exe).is_file(), f"no spoofwatch console script at {exe}"
    for cmd, cwd in (
        ([exe, "--help"], tmp_path),
        ([sys.executable, "-m", "spoofwatch", "--help"], tmp_path),
        ([sys.executable, "-m", "spoofwatch", "--help"], REPO_ROOT),
    ):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd).stdout
        for sub in ("score", "weights", "export"):
            assert sub in out
