"""The ``mltrail`` command itself, typed as a user types it: ``--version``, bare ``mltrail``,
``-v`` before or after the verb, and every verb's ``--help`` with examples, exit codes and help
for each positional argument."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mltrail
from mltrail.cli import VERBS

MLTRAIL = str(Path(sys.executable).with_name("mltrail"))


def mltrail_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([MLTRAIL, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_version_and_bare_command_print_what_a_newcomer_needs() -> None:
    done = mltrail_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"mltrail {mltrail.__version__}"
    bare = mltrail_cli()
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: mltrail") and bare.stderr == ""
    for verb in VERBS:
        assert f"\n    {verb} " in bare.stdout
    assert "exit codes:" in bare.stdout and "examples:" in bare.stdout
    assert mltrail_cli("-v").stdout == bare.stdout  # options and no verb: the help too


def test_verbose_is_accepted_after_the_verb(tmp_path: Path) -> None:
    spool = str(tmp_path / "empty-spool")
    for args in (["-v", "sync", "--dry-run"], ["sync", "-v", "--dry-run"], ["sync", "--dry-run", "--verbose"]):  # fmt: skip
        done = mltrail_cli(*args, "--spool-dir", spool)
        assert done.returncode == 0, (args, done.stderr)
        assert f"Nothing to sync in {spool}." in done.stdout
    # -v after the verb turns the debug output on, as before it: the traceback instead of the
    # one-line "(run with -v for details)".
    bad = mltrail_cli("show", "0123456789abcdef0123456789abcdef", "--tracking-uri", "foo://bar")
    assert bad.returncode != 0
    if "run with -v" in bad.stderr:
        after = mltrail_cli(
            "show", "0123456789abcdef0123456789abcdef", "--tracking-uri", "foo://bar", "-v"
        )
        assert "Traceback" in after.stderr and "unrecognized arguments" not in after.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_help_has_examples_exit_codes_and_positional_help(verb: str) -> None:
    done = mltrail_cli(verb, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "examples:" in text and "exit codes:" in text, text
    assert "\n  mltrail " in text  # examples are commands, kept verbatim (not re-wrapped)
    assert "--json" in text and "--verbose" in text
    if "positional arguments:" in text:
        section = text.split("positional arguments:")[1].split("options:")[0]
        for line in section.strip("\n").splitlines():
            if line.startswith("  ") and not line.startswith("   "):
                name, _, help_text = line.strip().partition(" ")
                assert help_text.strip(), f"{verb}: positional {name} has no help"
