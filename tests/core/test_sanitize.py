"""Keys, values and secrets: what leaves the process is valid for MLflow and holds no secret."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest

from mltrail.recording.sanitize import (
    KeySanitizer,
    flatten,
    is_secret_name,
    is_valid_key,
    metric_value,
    param_text,
    redact_text,
    redact_value,
    truncate,
)

AWKWARD_KEYS = [
    "val/AR@100",
    "timing(s)/gen",
    "gpu_id: 0/memory.used (MB)",
    "train//loss",
    "/loss",
    "loss/",
    "a/../b",
    "./x",
    "",
    "k" * 300,
    "損失",
    "map@3",
]


@pytest.mark.parametrize("raw", AWKWARD_KEYS)
def test_every_awkward_key_becomes_valid(raw: str) -> None:
    key = KeySanitizer()(raw)
    assert is_valid_key(key), key


def test_valid_keys_are_kept_and_readable_replacements_used() -> None:
    keys = KeySanitizer()
    assert keys("val_loss") == "val_loss"
    assert keys("損失") == "損失"
    assert keys("val/AR@100") == "val/AR_at_100"
    assert keys("train//loss") == "train/loss"
    assert keys.changed == {"val/AR@100": "val/AR_at_100", "train//loss": "train/loss"}


def test_sanitising_is_deterministic_and_collision_free() -> None:
    first, second = KeySanitizer(), KeySanitizer()
    raws = ["a@1", "a_at_1", "x" * 300, "x" * 299 + "y", "train//loss", "train/loss"]
    logged = [first(r) for r in raws]
    assert logged == [second(r) for r in raws]
    assert len(set(logged)) == len(raws)
    assert all(len(k) <= 250 for k in logged)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (3, 3.0),
        (True, 1.0),
        ("0.25", 0.25),
        (np.float16(1.5), 1.5),
        (np.float64(0.75), 0.75),  # a float subclass (LightGBM's metrics)
        (np.array(2.0), 2.0),
        (Decimal("1.25"), 1.25),
        (None, None),
        ("abc", None),
        ([1, 2], None),
    ],
)
def test_metric_values(value: object, expected: float | None) -> None:
    assert metric_value(value) == expected


def test_torch_scalar_with_grad() -> None:
    torch = pytest.importorskip("torch")
    value = (torch.ones(1, requires_grad=True) * 2).sum()
    assert metric_value(value) == 2.0


def test_nonfinite_values_pass_through() -> None:
    assert math.isnan(metric_value(float("nan")))
    assert metric_value(float("inf")) == math.inf


@pytest.mark.parametrize(
    "name", ["api_key", "hf_token", "password", "MLFLOW_TRACKING_PASSWORD", "awsSecretAccessKey"]
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["use_cls_token", "pad_token", "tokenizer", "max_tokens", "monitor_key", "keyboard"]
)
def test_harmless_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redaction_of_values_and_text() -> None:
    assert redact_value("api_key", "CANARY-aaaa-1111") == "***"
    assert redact_value("use_cls_token", True) is True
    assert redact_value("pad_token", "[PAD]") == "[PAD]"
    # once seen as a secret, the value is redacted wherever it appears later
    assert "CANARY-aaaa-1111" not in redact_text("failed with key CANARY-aaaa-1111 at step 3")
    url = redact_text("postgresql://admin:CANARY2@db.example.com:5432/mlflow")
    assert "CANARY2" not in url and "db.example.com" in url and "admin" in url
    assert "ghp_" not in redact_text(
        "git remote https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/x"
    )
    env_file = redact_text("HF_TOKEN=CANARY3zzz\nDEBUG=true\n")
    assert "CANARY3zzz" not in env_file and "DEBUG=true" in env_file


def test_secret_environment_values_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "CANARY-env-9876")
    assert "CANARY-env-9876" not in redact_text("connecting with CANARY-env-9876")


def test_truncate_marks_the_cut() -> None:
    cut = truncate("x" * 10_000, 6000)
    assert len(cut) == 6000 and cut.endswith("...[truncated]")
    assert truncate("short", 6000) == "short"


def test_flatten_nested_and_dataclasses() -> None:
    from dataclasses import dataclass

    @dataclass
    class Opt:
        lr: float = 0.1
        betas: tuple = (0.9, 0.99)

    flat = flatten({"model": {"layers": 3, "act": {"name": "relu"}}, "opt": Opt(), "empty": {}})
    assert flat == {
        "model.layers": 3,
        "model.act.name": "relu",
        "opt.lr": 0.1,
        "opt.betas": (0.9, 0.99),
        "empty": {},
    }


def test_a_set_param_reads_the_same_in_every_process() -> None:
    """``metric={"l1", "l2"}`` (LightGBM's own example) iterates in a per-process order: the
    param, and with it the run's fingerprint, must not change between two identical runs."""
    code = "from mltrail.recording.sanitize import param_text; print(param_text({'l1', 'l2', 'rmse', 'auc', 'map'}))"
    texts = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert texts == {"{'auc', 'l1', 'l2', 'map', 'rmse'}"}


def test_object_params_read_the_same_in_every_process() -> None:
    """A random search's SciPy distributions read as written, and no param keeps the address
    of a default repr (a different one in every process, so the fingerprint would differ)."""
    from scipy.stats import loguniform, randint, uniform

    class Opaque:
        pass

    rng = np.random.RandomState(0)
    assert param_text(randint(1, 6)) == "randint(1, 6)"
    assert param_text(loguniform(1e-3, 10)) == "loguniform(0.001, 10)"
    assert param_text(uniform(loc=0, scale=2)) == "uniform(loc=0, scale=2)"
    assert param_text(Opaque()).endswith("Opaque object>")
    assert param_text([rng]) == "[RandomState(MT19937)]"  # its repr holds its address
    assert "0x" not in param_text({"dist": randint(1, 6), "rng": rng, "obj": Opaque()})
    assert param_text("made at 0x10") == "made at 0x10"  # the user's own text stays as it is
