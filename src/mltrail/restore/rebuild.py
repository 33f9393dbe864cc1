"""The environment a rerun runs in: ``mltrail reproduce --env rebuild|current|PATH``.

``rebuild`` makes a virtual environment from what the run recorded: its Python version
(``provenance.json``) and its package list (``mltrail/requirements.txt``, a complete ``pip
freeze``). The environment lives in a cache folder keyed by the Python version and the package
list (:func:`default_cache_dir`, or ``--env-cache`` / ``MLTRAIL_ENV_CACHE``), so a second
reproduce of the same list reuses it and only installs what is missing.

- Python: this interpreter when its ``X.Y`` is the run's, else ``pythonX.Y`` on ``PATH``, else
  one of uv's managed Pythons (``uv python find``); otherwise a clear error naming what to
  install.
- The venv is made with ``python -m venv --without-pip``; packages are installed by ``uv pip``
  when uv is on ``PATH``, else by this installation's pip (``pip --python``, pip 22.3 or later).
  The list is installed as recorded, in one ``install --no-deps -r`` (it is already complete);
  when that fails, again without the packages the installer names as not found, else package
  by package, so that exactly what could not be installed is listed and the rest is installed
  anyway.
- Packages this installation has at exactly the recorded version are not downloaded again: when
  the Python ``X.Y`` is the same, they are linked from here (a folder of symbolic links, the
  "overlay", that the venv appends to its ``sys.path`` after its own ``site-packages``).
- mltrail itself (the rerun records a run too) always comes from this installation, since the
  run's recorded mltrail version need not exist on a registry; with the same Python ``X.Y`` its
  own dependencies that the run did not list come from here too, otherwise they are installed
  (``pip install`` of mltrail's requirements, which the run's pins mostly satisfy).
- The project, when the run had it installed editable (``pip install -e``) from its repository,
  is installed editable from the restored code (the rerun's worktree), not from its recorded
  path; an editable install from outside the repository is listed as not installed.

``current`` reruns with this interpreter (the behaviour without ``--env``). ``PATH`` is a
virtual environment (or a Python executable) you prepared; it is used as it is, and must be
able to import mltrail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError
from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.restore.rebuild")

#: Where rebuilt environments are kept, instead of :func:`default_cache_dir`.
CACHE_VARIABLE = "MLTRAIL_ENV_CACHE"
#: ``0`` hides the overlay from a rebuilt environment's Python (the installer runs so).
OVERLAY_VARIABLE = "MLTRAIL_ENV_OVERLAY"
#: Seconds one installer call may take (a large package list from a slow registry).
INSTALL_TIMEOUT = 3600.0
_PTH = "_mltrail_overlay.pth"
#: pip's and uv's words for a requirement that no index has (the group is its name).
_NOT_FOUND = (
    r"(?:satisfies the requirement|No matching distribution found for) ([A-Za-z0-9._-]+)"
    r"|Because ([A-Za-z0-9._-]+) was not found in the package registry"
)
_PROBE = (
    "import json, sys, sysconfig\n"
    "from importlib import metadata\n"
    "purelib = sysconfig.get_paths()['purelib']\n"
    "found = {}\n"
    "for dist in metadata.distributions(path=[purelib]):\n"
    "    name = dist.metadata['Name']\n"
    "    if name:\n"
    "        found.setdefault(name, dist.version)\n"
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'purelib': purelib,\n"
    "                  'prefix': sys.prefix, 'packages': found}))\n"
)


def default_cache_dir() -> Path:
    """``$MLTRAIL_ENV_CACHE``, else ``$XDG_CACHE_HOME/mltrail/envs`` (``~/.cache/mltrail/envs``)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mltrail" / "envs"


def canonical(name: str) -> str:
    """A distribution's name as the registry compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


# --- the recorded list --------------------------------------------------------------------------


@dataclasses.dataclass
class Requirements:
    """A run's ``requirements.txt``, split by how each entry is installed again."""

    #: ``name==version`` and ``name @ url`` lines, installed as they are.
    install: list[str] = dataclasses.field(default_factory=list)
    #: canonical name -> recorded version, for the ``name==version`` lines.
    pins: dict[str, str] = dataclasses.field(default_factory=dict)
    #: (name, version, folder relative to the repository) of editable installs of its code.
    projects: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    #: editable installs from outside the run's repository (their code was not recorded).
    outside: list[str] = dataclasses.field(default_factory=list)
    #: the mltrail version the run used (installed from here instead).
    mltrail: str | None = None


def split_requirements(text: str, git_root: str | None) -> Requirements:
    """Sort the lines of a recorded ``requirements.txt`` (mltrail's ``pip freeze`` format)."""
    found = Requirements()
    editable: tuple[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        marker = re.match(r"^# Editable install \((.+?)==(.+)\)$", line)
        if marker:
            editable = (marker.group(1), marker.group(2))
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e ") or line.startswith("--editable"):
            path = line.split(None, 1)[1].strip() if " " in line else ""
            name, version = editable or (path, "")
            editable = None
            if canonical(name) == "mltrail":
                found.mltrail = version
            elif git_root and _under(path, git_root):
                found.projects.append((name, version, os.path.relpath(path, git_root)))
            else:
                found.outside.append(f"{name}=={version} (editable, {path})")
            continue
        if line.startswith("-"):
            continue  # an option line: mltrail writes none
        name = re.split(r"\s*(?:==| @ )", line, maxsplit=1)[0]
        if canonical(name) == "mltrail":
            found.mltrail = line.partition("==")[2] or line
            continue
        found.install.append(line)
        if "==" in line:
            found.pins[canonical(name)] = line.partition("==")[2].strip()
    return found


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# --- Python -------------------------------------------------------------------------------------


def find_python(version: str) -> str:
    """An interpreter of the run's Python ``X.Y`` (see the module docstring).

    Raises:
        MltrailError: when no such Python is installed, naming what to install.
    """
    wanted = ".".join(version.split(".")[:2])
    if ".".join(platform.python_version_tuple()[:2]) == wanted:
        return sys.executable
    candidates = [shutil.which(f"python{wanted}")]
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run(
            [uv, "python", "find", wanted], capture_output=True, text=True, check=False
        )
        candidates.append(found.stdout.strip() if found.returncode == 0 else None)
    for candidate in candidates:
        if candidate and _python_version(candidate).rpartition(".")[0] == wanted:
            return candidate
    where = "on PATH" + (" or among uv's Pythons" if uv else "")
    raise MltrailError(
        f"The run used Python {version} and no python{wanted} was found {where}. Install "
        f"Python {wanted} (`uv python install {wanted}`, `pyenv install {wanted}` or your "
        f"system's python{wanted} package), or rerun with --env current or --env PATH."
    )


def _python_version(python: str) -> str:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# --- the environment ----------------------------------------------------------------------------


@dataclasses.dataclass
class Environment:
    """Where a rerun runs, and what preparing it gave."""

    kind: str  #: "current", "rebuild" or "path"
    python: str  #: the interpreter that runs the recorded command
    folder: Path | None = None  #: the environment's folder (None for "current")
    python_version: str | None = None  #: the interpreter's version
    recorded_python: str | None = None  #: the run's Python version
    reused: bool = False  #: a rebuilt environment from the cache was used again
    installed: list[str] = dataclasses.field(default_factory=list)  #: installed now
    linked: int = 0  #: packages used from this installation instead of downloaded
    not_installed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    _requirements: Requirements | None = dataclasses.field(default=None, repr=False)
    _progress: Callable[[str], None] = dataclasses.field(default=print, repr=False)

    def activate(self, worktree: Path) -> str:
        """Install the run's project from ``worktree`` (rebuilt environments); the interpreter."""
        if self.kind != "rebuild" or self._requirements is None:
            return self.python
        for name, version, rel in self._requirements.projects:
            path = worktree / rel
            self._progress(f"Installing {name} (editable) from {path}")
            error = _install(self.python, ["--no-deps", "-e", str(path)])
            if error:
                self._fail(f"{name}=={version} (editable)", error)
            else:
                self.installed.append(f"{name} (editable, {path})")
        return self.python

    def _fail(self, requirement: str, error: str) -> None:
        self.not_installed.append({"requirement": requirement, "error": error})
        self._progress(f"warning: could not install {requirement}: {error}")

    def as_dict(self) -> dict[str, Any]:
        """The ``environment`` object of ``mltrail reproduce --json``."""
        return {
            "kind": self.kind,
            "python": self.python,
            "folder": str(self.folder) if self.folder else None,
            "python_version": self.python_version,
            "recorded_python": self.recorded_python,
            "reused": self.reused,
            "installed": list(self.installed),
            "linked": self.linked,
            "not_installed": list(self.not_installed),
            "notes": list(self.notes),
        }


def current(record: Any) -> Environment:
    """This interpreter (``--env current``)."""
    return Environment(
        "current",
        sys.executable,
        python_version=platform.python_version(),
        recorded_python=_recorded_python(record),
    )


def given(path: str | os.PathLike[str], record: Any) -> Environment:
    """A prepared environment (``--env PATH``: a venv folder or a Python executable), as it is.

    Raises:
        MltrailError: when PATH holds no Python, or one that cannot import mltrail.
    """
    folder = Path(path).expanduser().absolute()
    if not folder.exists():
        raise MltrailError(
            f"--env {path}: neither rebuild, current, nor an existing environment folder or "
            "Python executable."
        )
    python = folder if folder.is_file() else folder / "bin" / "python"
    if not python.is_file() and (folder / "Scripts" / "python.exe").is_file():
        python = folder / "Scripts" / "python.exe"
    if not python.is_file():
        raise MltrailError(
            f"--env {path}: no Python there (expected a virtual environment's folder with "
            "bin/python, or a Python executable)."
        )
    check = subprocess.run(
        [str(python), "-c", "import mltrail, platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise MltrailError(
            f"--env {path}: its Python cannot import mltrail, and the rerun records a run "
            f"with it. Install mltrail there (`{python} -m pip install mltrail`), or use "
            "--env rebuild."
        )
    env = Environment(
        "path",
        str(python),
        folder=folder if folder.is_dir() else python.parent.parent,
        python_version=check.stdout.strip(),
        recorded_python=_recorded_python(record),
    )
    return env


def _recorded_python(record: Any) -> str | None:
    return (record.environment.get("python") or {}).get("version")


def rebuild(
    record: Any,
    client: Any,
    cache: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] = print,
) -> Environment:
    """The run's environment rebuilt from its recorded Python and packages (``--env rebuild``).

    Raises:
        MltrailError: when the run recorded no Python version or package list, or the Python
            is not installed here.
    """
    version = _recorded_python(record)
    text = record.requirements(client)
    if not version or not text:
        missing = "Python version" if not version else "package list (mltrail/requirements.txt)"
        raise MltrailError(
            f"Run {record.run_id} recorded no {missing}: its environment cannot be rebuilt. "
            "Rerun with --env current or --env PATH."
        )
    git_root = ((record.provenance or {}).get("git") or {}).get("root")
    return ensure(text, version, cache=cache, git_root=git_root, progress=progress)


def ensure(
    requirements: str,
    python_version: str,
    cache: str | os.PathLike[str] | None = None,
    git_root: str | None = None,
    progress: Callable[[str], None] = print,
) -> Environment:
    """Make (or bring up to date) the cached environment of a package list and a Python.

    Args:
        requirements: the recorded ``requirements.txt``.
        python_version: the recorded Python version (``X.Y`` or ``X.Y.Z``).
        cache: the folder holding rebuilt environments (default: :func:`default_cache_dir`).
        git_root: the run's repository, whose editable installs come from the restored code.
        progress: receives one line per step.
    """
    wanted = split_requirements(requirements, git_root)
    python = find_python(python_version)
    major_minor = ".".join(python_version.split(".")[:2])
    key = hashlib.sha256(
        "\n".join([major_minor, *sorted(wanted.install)]).encode("utf-8")
    ).hexdigest()[:16]
    home = Path(cache).expanduser() if cache else default_cache_dir()
    folder = home / f"py{major_minor}-{key}"
    venv = folder / "venv"
    with _locked(folder):
        reused = (venv / "pyvenv.cfg").is_file()
        probe = _probe(venv) if reused else None
        if probe is None:
            if venv.exists():
                shutil.rmtree(venv)  # half-made, or its Python is gone
            progress(f"Creating a Python {major_minor} environment in {venv}")
            made = subprocess.run(
                [python, "-m", "venv", "--without-pip", str(venv)],
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                raise MltrailError(f"{python} -m venv {venv} failed: {_last_line(made)}")
            probe = _probe(venv)
            if probe is None:
                raise MltrailError(f"The new environment {venv} does not run.")
        else:
            progress(f"Using the environment {venv} (made before for the same packages)")
        env = Environment(
            "rebuild",
            str(_venv_python(venv)),
            folder=venv,
            python_version=probe["version"],
            recorded_python=python_version,
            reused=reused,
            _requirements=wanted,
            _progress=progress,
        )
        if probe["version"] != python_version and len(python_version.split(".")) == 3:
            env.notes.append(f"Python {probe['version']} (the run used {python_version})")
        same_abi = ".".join(platform.python_version_tuple()[:2]) == major_minor
        here = _installed_here()
        inside = {canonical(name): v for name, v in probe["packages"].items()}
        linked = [
            dist
            for name, version in wanted.pins.items()
            if same_abi
            and inside.get(name) != version
            and (dist := here.get(name)) is not None
            and dist.version == version
            and dist.files is not None
        ]
        linked_names = {canonical(dist.metadata["Name"]) for dist in linked}
        todo = [
            line
            for line in wanted.install
            if _name(line) not in linked_names and not _satisfied(line, inside)
        ]
        for requirement in wanted.outside:
            env._fail(requirement, "an editable install from outside the run's repository")
        if todo:
            env.installed += _install_all(env, folder, todo, progress)
        # What mltrail needs and the venv lacks (a pin that failed included) comes from here.
        present = linked_names | set(inside) | {_name(line) for line in env.installed}
        extras = _mltrail_closure(here, present) if same_abi else []
        env.linked = len(linked)
        _write_overlay(folder / "overlay", [*linked, *extras], here, probe["purelib"])
        if not same_abi:
            # mltrail is linked alone; what it needs and the run lacked comes from the registry.
            needs = [
                r
                for r in (_mltrail_dist(here).requires or [])
                if "extra ==" not in r.replace("'", '"')
            ]
            error = _install(env.python, needs) if needs else None
            if error:
                env._fail("mltrail's dependencies", error)
        if env.not_installed:
            progress(
                f"warning: {len(env.not_installed)} of the run's packages could not be "
                "installed; the rerun goes on without them."
            )
        return env


def _satisfied(line: str, inside: dict[str, str]) -> bool:
    version = line.partition("==")[2].strip()
    return inside.get(_name(line)) == version if version else _name(line) in inside


def _install_all(
    env: Environment, folder: Path, lines: list[str], progress: Callable[[str], None]
) -> list[str]:
    """Install ``lines`` in one call. When that fails: without the packages the installer
    names as not found, again in one call; else one by one. Returns what got installed."""
    listing = folder / "requirements.txt"
    progress(f"Installing {len(lines)} package(s) with {_installer_name()}")
    remaining = list(lines)
    while remaining:
        listing.write_text("".join(line + "\n" for line in remaining), encoding="utf-8")
        error = _install(env.python, ["--no-deps", "-r", str(listing)])
        if error is None:
            return remaining
        named = {canonical(m.group(1) or m.group(2)) for m in re.finditer(_NOT_FOUND, error)}
        missing = [line for line in remaining if _name(line) in named]
        if not missing or len(remaining) == 1:
            break
        for line in missing:
            env._fail(line, error)
            remaining.remove(line)
    if not remaining:
        return []
    if len(remaining) == 1:
        env._fail(remaining[0], error)
        return []
    progress(f"Installing them together failed ({error}); installing one by one")
    done = []
    for line in remaining:
        error = _install(env.python, ["--no-deps", line])
        if error:
            env._fail(line, error)
        else:
            done.append(line)
    return done


def _name(line: str) -> str:
    """The canonical name of a ``name==version`` or ``name @ url`` line."""
    return canonical(re.split(r"\s*(?:==|@)", line, maxsplit=1)[0])


def _installer_name() -> str:
    return "uv" if shutil.which("uv") else "pip"


def _install(python: str, args: list[str]) -> str | None:
    """Install into ``python``'s environment; None, or the installer's last error line."""
    uv = shutil.which("uv")
    if uv:
        command = [uv, "pip", "install", "--python", python, *args]
    else:
        _check_pip()
        command = [
            sys.executable, "-m", "pip", "--python", python, "install",
            "--disable-pip-version-check", "--no-input", *args,
        ]  # fmt: skip
    logger.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            env={**os.environ, OVERLAY_VARIABLE: "0"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {INSTALL_TIMEOUT:.0f} s"
    logger.debug("%s%s", done.stdout, done.stderr)
    return None if done.returncode == 0 else _last_line(done)


def _check_pip() -> None:
    version = None
    with contextlib.suppress(metadata.PackageNotFoundError):
        version = metadata.version("pip")
    parts = tuple(int(p) for p in re.findall(r"\d+", version or "0")[:2])
    if parts < (22, 3):
        raise MltrailError(
            "Rebuilding an environment needs uv on PATH, or pip 22.3 or later in mltrail's "
            f"own environment (found {version or 'no pip'}): `{sys.executable} -m pip install "
            "-U pip`, or install uv."
        )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    """The installer's most telling line: a package not found, else its first error."""
    lines = [line.strip(" ╰─▶×") for line in (done.stderr or done.stdout or "").splitlines()]
    missing = [line for line in lines if re.search(_NOT_FOUND, line)]
    errors = [line for line in lines if line.startswith("ERROR") or "error:" in line.lower()]
    found = missing or errors or [line for line in lines if line]
    return redact_text((found or [f"exit code {done.returncode}"])[0])[:300]


def _venv_python(venv: Path) -> Path:
    unix = venv / "bin" / "python"
    return unix if unix.exists() else venv / "Scripts" / "python.exe"


def _probe(venv: Path) -> dict[str, Any] | None:
    """The venv's Python version, ``site-packages`` and own packages (the overlay hidden)."""
    python = _venv_python(venv)
    if not python.exists():
        return None
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, OVERLAY_VARIABLE: "0"},
            check=False,
        )
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One reproduce at a time prepares a given environment."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the overlay: packages used from this installation ---------------------------------------------


def _installed_here() -> dict[str, metadata.Distribution]:
    """This installation's distributions by canonical name (the first on ``sys.path`` wins,
    one installed by an installer over a stale build folder's)."""
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:
            continue
        if not name:
            continue
        key = canonical(name)
        if key not in found or (
            found[key].read_text("INSTALLER") is None and dist.read_text("INSTALLER") is not None
        ):
            found[key] = dist
    return found


def _mltrail_dist(here: dict[str, metadata.Distribution]) -> metadata.Distribution:
    dist = here.get("mltrail")
    if dist is None or dist.files is None:
        raise MltrailError(
            "mltrail's own installation has no file list (RECORD): it cannot be made "
            "importable in the rebuilt environment. Reinstall mltrail with pip or uv."
        )
    return dist


def _mltrail_closure(
    here: dict[str, metadata.Distribution], skip: set[str]
) -> list[metadata.Distribution]:
    """mltrail and the distributions it needs (markers evaluated), less those in ``skip``."""
    from packaging.requirements import InvalidRequirement, Requirement

    todo: list[tuple[str, frozenset[str]]] = [("mltrail", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    found: dict[str, metadata.Distribution] = {}
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = here.get(name)
        if dist is None:
            continue
        if name == "mltrail" or name not in skip:
            found[name] = dist
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in ("", *extras)
            ):
                continue
            todo.append((canonical(requirement.name), frozenset(requirement.extras)))
    _mltrail_dist(here)
    return list(found.values())


def _write_overlay(
    overlay: Path,
    dists: list[metadata.Distribution],
    here: dict[str, metadata.Distribution],
    purelib: str,
) -> None:
    """Link each distribution's top-level files into ``overlay``; the venv appends it to its
    ``sys.path`` (a ``.pth`` file that the installer's runs switch off)."""
    if overlay.exists():
        for entry in overlay.iterdir():
            # Only links live here: unlinking never touches what they point to.
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry)
    overlay.mkdir(parents=True, exist_ok=True)
    wanted = list(dists)
    if not any(canonical(d.metadata["Name"]) == "mltrail" for d in wanted):
        wanted.append(_mltrail_dist(here))
    for dist in wanted:
        location = Path(str(dist.locate_file(""))).resolve()
        for top in sorted({f.parts[0] for f in dist.files or [] if f.parts}):
            if top in ("..", "__pycache__") or top.startswith("/"):
                continue
            source = location / top
            link = overlay / top
            if source.exists() and not link.is_symlink():
                link.symlink_to(source, target_is_directory=source.is_dir())
    line = (
        f"import os, site; os.environ.get({OVERLAY_VARIABLE!r}) == '0' or "
        f"site.addsitedir({str(overlay)!r})\n"
    )
    Path(purelib, _PTH).write_text(line, encoding="utf-8")


# --- what differs ---------------------------------------------------------------------------------


def package_changes(original: str | None, rerun: str | None) -> list[dict[str, str]]:
    """The packages whose version differs between two recorded ``requirements.txt``."""
    from mltrail.restore.compare import package_differences, parse_requirements

    if original is None or rerun is None:
        return []
    return [
        {"name": name, "original": a, "rerun": b}
        for name, a, b in package_differences(
            parse_requirements(original), parse_requirements(rerun)
        )
    ]
