"""Environment capture: Python, platform, hardware, command line, allow-listed variables, packages."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from mltrail.capture import env


def test_environment_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:hunter2hunter2@mlflow.example.com")
    monkeypatch.setenv("MY_PRIVATE_SETTING", "not recorded")
    monkeypatch.setattr(
        sys, "argv", ["train.py", "--lr", "0.1", "--api-key", "abcd1234", "--token=xyz9876"]
    )
    data = env.capture()
    assert data["python"]["version"] == platform.python_version()
    assert data["python"]["implementation"] == platform.python_implementation()
    assert data["python"]["executable"] == sys.executable
    assert data["platform"]["system"] == platform.system()
    assert data["cpu"]["count"] == os.cpu_count()
    assert data["memory_bytes"] > 2**20
    assert isinstance(data["gpus"], list)
    assert data["versions"] == {
        "mltrail": metadata.version("mltrail"),
        "mlflow": metadata.version("mlflow"),
        "dvc": metadata.version("dvc"),
    }
    assert data["command"]["argv"] == [
        sys.executable,
        "train.py",
        "--lr",
        "0.1",
        "--api-key",
        "***",
        "--token=***",
    ]
    assert data["command"]["entry_script"] == os.path.abspath("train.py")
    variables = data["variables"]
    assert variables["OMP_NUM_THREADS"] == "3"
    assert "hunter2" not in variables["MLFLOW_TRACKING_URI"]
    assert variables["MLFLOW_TRACKING_URI"].endswith("@mlflow.example.com")
    assert "MY_PRIVATE_SETTING" not in variables
    assert set(variables) <= set(env.ENV_ALLOWLIST)


def test_cpu_model_matches_the_os() -> None:
    model = env.cpu_model()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            assert model in handle.read()
    else:
        assert model == (platform.processor() or None)


def test_requirements_match_pip_freeze() -> None:
    text = env.requirements()
    lines = text.splitlines()
    pins = {}
    for line in lines:
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower()] = version
    assert pins["mlflow"] == metadata.version("mlflow")
    assert pins["pyyaml"] == metadata.version("pyyaml")
    assert "-e " + str(Path(env.__file__).parents[3]) in lines  # the editable checkout
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    def names(lines: list[str]) -> set[str]:
        found = set()
        for line in lines:
            if line.startswith(("#", "-e ")) or not line.strip():
                continue
            name = line.split("==")[0].split(" @ ")[0].strip()
            found.add(re.sub(r"[-_.]+", "-", name).lower())  # PEP 503 normalised
        return found

    assert names(lines) == names(frozen)


def test_entry_script_is_resolved_against_the_start_directory(tmp_path, monkeypatch) -> None:
    import subprocess

    (tmp_path / "proj").mkdir()
    (tmp_path / "elsewhere").mkdir()
    script = tmp_path / "proj" / "train.py"
    script.write_text(
        "import os, sys\n"
        "os.chdir(sys.argv[1])\n"
        "from mltrail.capture.env import _entry_script\n"
        "print(_entry_script())\n"
    )
    result = subprocess.run(
        [sys.executable, "train.py", str(tmp_path / "elsewhere")],
        cwd=tmp_path / "proj",
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(script)


def test_package_list_is_read_once_until_the_packages_change(tmp_path, monkeypatch) -> None:
    """Many trainings in one process read the installed packages once; an install between
    them (a notebook's %pip) changes a package folder and is seen."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    first = env.requirements()
    reads: list[int] = []
    original = env._read_requirements
    monkeypatch.setattr(env, "_read_requirements", lambda: reads.append(1) or original())
    assert env.requirements() == first and reads == []
    info = folder / "newpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: newpkg\nVersion: 1.0\n")
    later = time.time_ns() + 2_000_000_000
    os.utime(folder, ns=(later, later))  # as an install moves the folder's time on
    assert "newpkg==1.0" in env.requirements() and reads == [1]
