"""The package as a user installs it: a clean build, a complete wheel, README install lines that
work (mltrail is on no package index)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import GIT_IDENTITY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout"
)


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """pip of this environment, offline: nothing is fetched, build tools are the installed ones."""
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        env={**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the working tree (its files as they are now) in a folder named mltrail."""
    base = tmp_path_factory.mktemp("packaging")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target = base / "mltrail"
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    environ = {**os.environ, **GIT_IDENTITY}
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(["git", *command], cwd=target, env=environ, check=True)
    return target


@pytest.fixture(scope="module")
def wheel(clone: Path) -> tuple[Path, str]:
    """``pip wheel`` of the clone, with the build's own output."""
    done = pip("wheel", "-v", "--no-deps", "--no-build-isolation", "-w", "dist", ".", cwd=clone)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = (clone / "dist").glob("mltrail-*.whl")
    return built, done.stdout + done.stderr


def test_the_build_prints_no_setuptools_warnings(wheel: tuple[Path, str]) -> None:
    _, output = wheel
    for sign in ("SetuptoolsDeprecationWarning", "SetuptoolsWarning", "!!\n", "########"):
        assert sign not in output, output[output.find(sign) - 2000 : output.find(sign) + 500]


def test_the_wheel_has_the_license_every_package_and_the_run_hook(wheel: tuple[Path, str]) -> None:
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode()
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "mltrail/_bootstrap/sitecustomize.py" in names  # what `mltrail run` puts on the path
    for module in ("mltrail/cli/__init__.py", "mltrail/recording/trail.py", "mltrail/py.typed"):
        assert module in names
    adapters = {p.name for p in (ROOT / "integrations").glob("*.py")}
    assert adapters and {f"mltrail/integrations/{a}" for a in adapters} <= names


def readme_install_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith(("pip install", "pip wheel"))
    ]


def test_the_readme_install_lines_work(clone: Path, wheel: tuple[Path, str]) -> None:
    """Each ``pip`` line of the README, run as written from the folder that holds the clone, with
    the clone's path for ``<your remote>`` (resolved, not installed: the packages are here)."""
    lines = readme_install_lines()
    assert any("./mltrail[" in line for line in lines)
    assert any("@ git+<your remote>" in line for line in lines)
    here = clone.parent
    for line in lines:
        args = shlex.split(line.replace("<your remote>", clone.as_uri()))
        assert args[0] == "pip", line
        if args[1] == "install":
            args[2:2] = ["--dry-run", "--no-deps", "--no-build-isolation"]
        else:
            args[2:2] = ["--no-build-isolation"]
        done = pip(*args[1:], cwd=here)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        if args[1] == "install":
            assert "Would install mltrail-0.1.0" in done.stdout, line
