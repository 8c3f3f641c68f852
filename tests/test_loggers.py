"""Run callbacks and the loggers built on them: CSV and TensorBoard files per run, a plugin's
own callback (taking a subset of the arguments), and clear errors for unknown or unusable ones."""

from __future__ import annotations

import csv
import json
import sys
import types

import metazoo
import pytest

SPEC = ('suite = "sinusoid"\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n[training]\nsteps = 6\nval_every = 2\n'
        "[algorithms.fomaml]\nmeta_batch = 2\n")


def test_csv_and_tensorboard_logs_per_run(zoo, tmp_path):
    spec = tmp_path / "logged.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--log", "csv,tensorboard",
                          "--out", str(out), "-q")
    assert code == 0, stderr
    (record_path,) = (out / "logged" / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    folder = out / "logged" / "logs" / record_path.stem
    rows = list(csv.DictReader(open(folder / "validation.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert [float(r["value"]) for r in rows] == pytest.approx([v["value"] for v in record["validation"]])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("validation")] == [2, 4, 6]
    assert [e.value for e in events.Scalars("validation")] == pytest.approx([v["value"] for v in record["validation"]])


def test_a_plugin_callback_sees_every_validation_and_the_end(zoo, tmp_path, monkeypatch):
    seen = []

    @metazoo.hookimpl
    def zoo_run_validation(step, value):  # a subset of the arguments
        seen.append(step)

    @metazoo.hookimpl
    def zoo_run_end(record):
        seen.append(record["status"])

    pm = metazoo.get_plugin_manager(autoload=False)
    pm.register(types.SimpleNamespace(zoo_run_validation=zoo_run_validation, zoo_run_end=zoo_run_end), name="spy")
    monkeypatch.setattr("metazoo.cli.get_plugin_manager", lambda blocked=(): pm)
    spec = tmp_path / "logged.toml"
    spec.write_text(SPEC)
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--out", str(tmp_path / "o"), "-q")
    assert code == 0, stderr
    assert seen == [2, 4, 6, "ok"]


def test_unknown_or_unusable_loggers_stop_the_bench(zoo, tmp_path, monkeypatch):
    code, _, stderr = zoo("bench", "--log", "wandb", "--out", str(tmp_path))
    assert code == 2 and "unknown logger 'wandb'; available: csv, tensorboard" in stderr
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code, _, stderr = zoo("bench", "--log", "tensorboard", "--out", str(tmp_path))
    assert code == 2 and "pip install 'metazoo[tensorboard]'" in stderr
    assert not list(tmp_path.rglob("*.json"))
