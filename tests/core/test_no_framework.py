"""The core works with no ML framework installed; adapters say which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Makes every ML framework unimportable in the child process, as in a core-only install.
BLOCK = textwrap.dedent("""
    import sys, importlib.abc
    BLOCKED = {"torch", "lightning", "pytorch_lightning", "keras", "tensorflow", "xgboost",
               "sklearn", "jax"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked)")
    sys.meta_path.insert(0, Block())
""")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_core_imports_and_records_without_frameworks(client) -> None:
    result = run("""
        import mltrail
        with mltrail.start_run(experiment="no-framework", capture=False) as trail:
            trail.log_params({"lr": 0.1})
            trail.log_metrics({"loss": 0.5}, step=0)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("loaded:", loaded)
        print(trail.run_id)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "loaded: []"
    recorded = client.get_run(lines[-1])
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params == {"lr": "0.1"}


@pytest.mark.parametrize("framework", ["lightning", "keras", "sklearn", "xgboost"])
def test_adapter_without_its_framework_names_the_extra(framework: str) -> None:
    result = run(f"""
        try:
            import mltrail.integrations.{framework}
        except ImportError as error:
            print(error)
        else:
            print("imported")
    """)
    assert result.returncode == 0, result.stderr
    assert f'pip install "mltrail[{framework}]"' in result.stdout
