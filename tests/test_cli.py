"""The zoo command line: bench end to end, list, plugins, leaderboard, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUICK_SPEC = """
suite = "sinusoid"
[protocol]
shots = 5
[evaluation]
test_tasks = 50
val_tasks = 20
[training]
steps = 30
val_every = 10
[algorithms.reptile]
inner_steps = 2
[published.maml]
value = 1.13
ci = 0.18
citation = "Li et al. 2017, Table 1"
"""


@pytest.fixture
def quick_spec(tmp_path) -> Path:
    path = tmp_path / "quick.toml"
    path.write_text(QUICK_SPEC)
    return path


def test_bench_trains_tests_and_writes_a_leaderboard(zoo, quick_spec, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--algos", "maml,reptile", "--benchmark", str(quick_spec),
                               "--seeds", "2", "--out", str(out))
    assert code == 0, stderr
    assert "| algorithm" in stdout and "maml" in stdout and "reptile" in stdout
    assert "1.130 ± 0.180 [1]" in stdout and "[1] Li et al. 2017, Table 1" in stdout
    folder = out / "quick"
    records = [json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")]
    assert sorted((r["algorithm"], r["seed"]) for r in records) == [
        ("maml", 0), ("maml", 1), ("reptile", 0), ("reptile", 1)]
    for record in records:
        assert record["status"] == "ok"
        assert len(record["test"]["per_task"]) == 50
        assert record["train"]["steps"] == 30
        assert [v["step"] for v in record["validation"]] == [10, 20, 30]
        assert record["hyperparameters"]["meta_batch"] == 25
    assert (folder / "leaderboard.md").read_text().startswith("### quick")
    assert "algorithm" in (folder / "leaderboard.csv").read_text().splitlines()[0]


def test_every_algorithm_meets_the_identical_test_tasks(zoo, quick_spec, tmp_path):
    from metazoo.benchmark import load_benchmark
    from metazoo.evaluation import TaskList
    from metazoo.plugins.sinusoid import Sinusoid

    spec = load_benchmark(quick_spec)
    first = list(TaskList(Sinusoid(**spec.protocol), "test", 50, spec.evaluation.eval_seed, 20))
    again = list(TaskList(Sinusoid(**spec.protocol), "test", 50, spec.evaluation.eval_seed, 20))
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a.tensors(), b.tensors()):
            assert x.equal(y)


def test_rerun_skips_finished_runs_and_force_reruns(zoo, quick_spec, tmp_path):
    args = ("bench", "--algos", "anil", "--benchmark", str(quick_spec), "--out", str(tmp_path))
    assert zoo(*args)[0] == 0
    path = next((tmp_path / "quick" / "runs").glob("anil-seed0-*.json"))
    created = json.loads(path.read_text())["created"]
    code, _, stderr = zoo(*args)
    assert code == 0 and "done before, kept" in stderr
    assert json.loads(path.read_text())["created"] == created
    code, _, stderr = zoo(*args, "--force")
    assert code == 0 and "done before" not in stderr


def test_a_changed_budget_is_a_different_run(zoo, quick_spec, tmp_path):
    base = ("bench", "--algos", "anil", "--benchmark", str(quick_spec), "--out", str(tmp_path), "-q")
    assert zoo(*base)[0] == 0
    assert zoo(*base, "--steps", "5")[0] == 0
    assert len(list((tmp_path / "quick" / "runs").glob("*.json"))) == 2


def test_shots_override_renames_the_benchmark(zoo, tmp_path):
    code, stdout, stderr = zoo("bench", "--algos", "fomaml", "--suite", "hyperplanes", "--shots", "2",
                               "--steps", "5", "--out", str(tmp_path), "-q")
    assert code == 0, stderr
    record = json.loads(next((tmp_path / "hyperplanes-shots2" / "runs").glob("*.json")).read_text())
    assert record["protocol"]["shots"] == 2 and record["metric"] == "accuracy"


def test_list_and_plugins(zoo):
    code, stdout, _ = zoo("list")
    assert code == 0
    for name in ("maml", "fomaml", "reptile", "metasgd", "anil", "sinusoid", "hyperplanes"):
        assert name in stdout
    assert "model-algorithm" in stdout and "plugin maml (metazoo" in stdout
    code, stdout, _ = zoo("list", "meta*")
    assert "metasgd" in stdout and "| maml " not in stdout
    code, stdout, _ = zoo("plugins")
    assert code == 0 and "zoo_register_algorithms" in stdout and "metazoo 0.1.0, built-in" in stdout


def test_blocking_a_plugin_on_the_command_line(zoo):
    code, stdout, _ = zoo("-p", "no:anil", "list")
    assert code == 0 and "anil" not in stdout
    code, _, stderr = zoo("-p", "anil", "list")
    assert code == 2 and "no:NAME" in stderr


def test_leaderboard_command_renders_every_format(zoo, quick_spec, tmp_path):
    assert zoo("bench", "--algos", "maml", "--benchmark", str(quick_spec), "--out", str(tmp_path), "-q")[0] == 0
    (tmp_path / "quick" / "runs" / "junk.json").write_text("{not json")
    for fmt, marker in (("md", "| algorithm"), ("csv", "benchmark,algorithm"), ("latex", "\\toprule"),
                        ("html", "<table")):
        code, stdout, stderr = zoo("leaderboard", str(tmp_path), "--format", fmt)
        assert code == 0 and marker in stdout, fmt
        assert "skipping" in stderr and "junk.json" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--algos", "mamba"), "unknown algorithm 'mamba'; available: anil, "),
        (("--suite", "nosuch"), "unknown suite 'nosuch'; available:"),
        (("--benchmark", "nosuch"), "unknown benchmark 'nosuch'"),
        (("--steps", "0"), "--steps must be a positive number"),
        (("--steps", "-3"), "--steps must be a positive number"),
        (("--seeds", "0"), "--seeds must be a positive number"),
        (("--shots", "-1"), "--shots must be a positive number"),
        (("--steps", "ten"), "'ten' is not a valid integer"),
        (("--device", "tpu"), "device 'tpu'"),
        (("--device", "cuda:7"), "cuda"),
        (("--suite", "sinusoid", "--benchmark", "sinusoid"), "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(zoo, tmp_path, args, message):
    code, stdout, stderr = zoo("bench", "--out", str(tmp_path), *args)
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_unwritable_output_directory(zoo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = zoo("bench", "--out", str(blocker / "sub"))
    assert code == 2 and f"cannot write to output directory {blocker / 'sub'}" in stderr
    assert stderr.count("\n") == 1


def test_bad_hyperparameter_in_a_spec_names_file_and_key(zoo, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('suite = "sinusoid"\n[algorithms.maml]\ninner_lrr = 0.1\n')
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "maml", "--out", str(tmp_path))
    assert code == 2 and "unknown setting 'inner_lrr'" in stderr and "inner_lr" in stderr
    spec.write_text('suite = "sinusoid"\n[training]\nsteps = "many"\n')
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--out", str(tmp_path))
    assert code == 2 and str(spec) in stderr and "steps must be int" in stderr


def test_model_data_learner_is_refused_on_regression(zoo, tmp_path):
    code, _, stderr = zoo("bench", "--algos", "protonet", "--suite", "sinusoid", "--out", str(tmp_path))
    assert code == 2 and "classification suite" in stderr
