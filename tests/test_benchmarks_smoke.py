"""Every benchmark case still runs (tiny sizes, ``--smoke``) and the harness summarises it.

Timings are never asserted: they depend on the machine. What is checked is what would make
``make bench`` break or publish nonsense: a case script that fails, prints no JSON, loses
checkpoints or metric values, or changes its output so that the table can no longer be built.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_harness():
    spec = importlib.util.spec_from_file_location("bench_run", BENCHMARKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


@pytest.mark.timeout(900)  # a busy machine makes the interpreters and imports slow
@pytest.mark.parametrize("case", harness.ALL_CASES)
def test_case_runs_and_is_summarised(case: str) -> None:
    if case == "core_server":
        pytest.skip("same script as 'core' with a server URI; starting a server is slow")
    if case == "import":
        record = harness.measure_imports(1)
    else:
        record = harness.run_case(case, "smoke", timeout=880)
    assert record["ok"], record.get("error")
    result = record["result"]
    rows = harness.summarise({case: record})
    assert rows, f"no summary rows for {case}"
    for row in rows:
        assert not row["measure"].startswith(("could not summarise", "did not complete")), row
    targets = [row for row in rows if row["met"] is not None]
    if case not in ("import",):
        assert targets, f"{case}: no row states a target"

    # What the published numbers stand on: every value and every checkpoint arrived.
    if case == "checkpoints":
        assert result["all_stored"] and all(result["all_stored"].values()), result
        assert {
            "mltrail",
            "mlflow_log_artifact",
            "lightning_trail",
            "lightning_mlflow_logger",
        } <= set(result["blocked_s"])
    if case == "scale":
        assert all(result["wide_run"]["all_values_stored"].values()), result["wide_run"]
        found = result["runs_by_commit"]["runs_found"]
        assert set(found.values()) == {result["runs_by_commit"]["runs_at_commit"]}, found
        assert result["concurrent"]["no_lost_values"], result["concurrent"]


def test_table_is_written_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\nintro\n\n{harness.START}\nold table\n{harness.END}\n\nnotes\n")
    record = {
        "ok": True,
        "result": {
            "repeats": 1,
            "interpreter_s": {
                k: {"median": v, "min": v, "max": v}
                for k, v in {"python": 0.1, "mltrail": 0.3}.items()
            },
            "import_s": {"mltrail": 0.2, "mlflow": 1.5},
        },
    }
    results = {
        "mode": "smoke",
        "cases": {"import": record},
        "environment": harness.environment(),
        "load_average": {"before": 1.0, "after": 1.5},
        "seconds": 60,
        "summary": harness.summarise({"import": record}),
    }
    harness.write_readme(readme, harness.markdown(results))
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# Bench\n\nintro\n") and text.rstrip().endswith("notes")
    assert "| import | `import mltrail`" in text
    assert f"{results['environment']['cpus']} CPUs" in text
    assert json.dumps(results)  # what results.json holds is plain JSON


def test_parse_json_takes_the_last_object_after_other_output() -> None:
    out = 'GPU available: False\n{"a": 1}\nmore noise\n{\n  "b": {\n    "c": 2\n  }\n}\n'
    assert harness.parse_json(out) == {"b": {"c": 2}}
    with pytest.raises(ValueError):
        harness.parse_json("no json here\n")
