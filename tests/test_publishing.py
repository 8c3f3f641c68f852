"""Tables people can publish: one configuration per row, a folder's table from all its records,
task lists independent of batching and paired only on equal digests, budgets, loud
configuration errors, ranks over tables where algorithms met, progress in logs, and the
published folders under results/ reproducible by their own commands."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from metazoo.benchmark import benchmark_from_dict, builtin_benchmarks, load_benchmark
from metazoo.leaderboard import average_ranks, summarize
from metazoo.render import render
from test_leaderboard import record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "omniglot"


def tiny_spec(folder: Path, inner_lr: float = 0.01, name: str = "tiny") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'suite = "sinusoid"\n[evaluation]\ntest_tasks = 20\nval_tasks = 10\n'
                    f"[training]\nsteps = 6\nval_every = 3\n"
                    f"[algorithms.anil]\nmeta_batch = 4\ninner_lr = {inner_lr}\n"
                    f"[algorithms.fomaml]\nmeta_batch = 4\n")
    return path


def rows(summary) -> dict[str, dict]:
    return {row["label"]: row for row in summary.to_dict("records")}


# -- one configuration per row ------------------------------------------------------------------


def test_a_changed_hyperparameter_is_another_row_not_another_seed(zoo, tmp_path):
    out = tmp_path / "out"
    spec = tiny_spec(tmp_path, inner_lr=0.01)
    assert zoo("bench", "--benchmark", str(spec), "--algos", "anil", "--out", str(out), "-q")[0] == 0
    tiny_spec(tmp_path, inner_lr=0.5)  # the spec edited, then run again into the same folder
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "anil", "--out", str(out), "-q")
    assert code == 0, stderr
    table = (out / "tiny" / "leaderboard.md").read_text()
    assert "| anil (inner_lr=0.01) " in table and "| anil (inner_lr=0.5) " in table, table
    summary = summarize(json.loads(p.read_text()) for p in (out / "tiny" / "runs").glob("*.json"))
    assert sorted(summary["seeds"]) == [1, 1] and summary["seed_sd"].isna().all()


def test_plugin_versions_label_rows_and_duplicate_seeds_are_reported_not_averaged():
    old = record("b", "anil", [0.1, 0.1], plugin_version="0.1", hyperparameters={"inner_lr": 0.1})
    new = record("b", "anil", [0.9, 0.9], plugin_version="0.2", hyperparameters={"inner_lr": 0.1}, key="k2")
    first = record("b", "maml", [0.2, 0.2], key="m1", created="2026-01-01T00:00:00", _path="runs/m1.json")
    second = record("b", "maml", [0.6, 0.6], key="m2", created="2026-02-01T00:00:00", _path="runs/m2.json")
    summary = summarize([old, new, first, second])
    by_label = rows(summary)
    assert set(by_label) == {"anil (version 0.1)", "anil (version 0.2)", "maml"}
    assert by_label["maml"]["seeds"] == 1 and by_label["maml"]["mean"] == pytest.approx(0.6)  # the newest only
    markdown = render(summary, "md")
    assert "maml seed 0 has 2 records of one configuration: only the newest successful one (runs/m2.json)" in markdown


# -- a folder's leaderboard is every record in it ---------------------------------------------------


def test_a_folders_leaderboard_holds_every_record_in_it(zoo, tmp_path):
    out, spec = tmp_path / "out", tiny_spec(tmp_path)
    assert zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--out", str(out), "-q")[0] == 0
    code, stdout, _ = zoo("bench", "--benchmark", str(spec), "--algos", "anil", "--out", str(out), "-q")
    assert code == 0
    for text in ((out / "tiny" / "leaderboard.md").read_text(), stdout):
        assert "| fomaml " in text and "| anil " in text
    assert (out / "tiny" / "leaderboard.csv").read_text().count("\ntiny,") == 2


# -- task lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite_name", ["sinusoid", "hyperplanes"])
def test_test_tasks_do_not_depend_on_batching_and_training_never_meets_them(host, suite_name):
    from metazoo.evaluation import TaskList, train_batch

    suite = host.suites.get(suite_name).factory()
    lists = [TaskList(suite, "test", 30, 1234, batch_tasks) for batch_tasks in (1, 7, 30)]
    tensors = [[torch.cat(parts) for parts in zip(*(b.tensors() for b in task_list))] for task_list in lists]
    for other in tensors[1:]:
        assert all(a.equal(b) for a, b in zip(tensors[0], other))
    assert len({task_list.digest() for task_list in lists}) == 1
    assert TaskList(suite, "test", 30, 1235, 30).digest() != lists[0].digest()
    assert TaskList(suite, "val", 30, 1234, 30).digest() != lists[0].digest()
    # a training seed equal to the evaluation seed still draws other tasks than the test list
    train = train_batch(suite, 1234, 0, 30)
    assert not train.support_x.equal(tensors[0][0])
    assert not train.support_x[0].equal(tensors[0][0][0])


def test_records_store_the_digest_and_only_equal_digests_are_paired(zoo, tmp_path):
    out, spec = tmp_path / "out", tiny_spec(tmp_path)
    assert zoo("bench", "--benchmark", str(spec), "--out", str(out), "-q")[0] == 0
    digests = {json.loads(p.read_text())["test"]["tasks_digest"] for p in (out / "tiny" / "runs").glob("*.json")}
    assert len(digests) == 1 and len(digests.pop()) == 16

    records = [record("b", "a", [0.9, 0.8, 0.7]), record("b", "c", [0.5, 0.4, 0.3]),
               record("b", "old", [0.1, 0.2, 0.3], digest="d0")]
    summary = summarize(records)
    assert set(summary["table"]) == {"b — 100 steps, val every 50 steps — test tasks d1",
                                     "b — 100 steps, val every 50 steps — test tasks d0"}
    assert rows(summary)["old"]["rank"] == 1 and math.isnan(rows(summary)["old"]["p_value"])
    assert not math.isnan(rows(summary)["c"]["p_value"])
    assert "tested on different task lists" in render(summary, "md")


def test_batch_tasks_is_not_part_of_the_protocol():
    spec = {"name": "s", "suite": "sinusoid", "evaluation": {"batch_tasks": 10}}
    assert benchmark_from_dict(spec, "a").hash() == benchmark_from_dict({**spec, "evaluation": {}}, "b").hash()


# -- budgets, validation, memory ----------------------------------------------------------------


def test_a_time_only_budget_from_toml_and_from_the_command_line(zoo, tmp_path):
    spec = tmp_path / "timed.toml"
    spec.write_text('suite = "sinusoid"\n[training]\ntime = 300\nclock = "cpu"\n')
    training = load_benchmark(spec).training
    assert training.steps is None and training.time == 300
    assert load_benchmark(spec).with_overrides({}, {"steps": 5, "time": None}).training.time is None
    plain = tmp_path / "plain.toml"
    plain.write_text('suite = "sinusoid"\n')
    assert load_benchmark(plain).training.steps == 1000  # neither given: the default step budget
    out = tmp_path / "out"
    code, _, stderr = zoo("bench", "--benchmark", str(plain), "--algos", "fomaml", "--time", "0.5", "--out", str(out),
                          "-q")
    assert code == 0, stderr
    (path,) = (out / "plain" / "runs").glob("*.json")
    saved = json.loads(path.read_text())
    assert saved["budget"]["steps"] is None and saved["train"]["steps"] != 1000
    assert "plain — 0.5 s, val every 250 steps" in (out / "plain" / "leaderboard.md").read_text()
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--time", "0.5", "--out", str(out), "-q")
    assert code == 0, stderr
    (path,) = (out / "timed" / "runs").glob("*.json")
    saved = json.loads(path.read_text())
    times = [point["budget_s"] for point in saved["validation"]]  # each point on the budget's (CPU) clock
    assert times == sorted(times) and 0 < times[-1] == pytest.approx(saved["train"]["budget_s"])
    assert "train CPU time (s)" in (out / "timed" / "leaderboard.md").read_text()


class _Scripted(torch.nn.Module):
    """A learner whose validation scores follow a script: NaN first, then numbers."""

    def __init__(self, scores):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.scores = iter(scores)

    def predict(self, batch):
        value = next(self.scores)
        with torch.no_grad():
            self.weight.fill_(value)
        return torch.full(batch.query_y.shape, value)


def test_a_nan_validation_is_never_the_best_state(host):
    from metazoo.evaluation import TaskList
    from metazoo.progress import Progress
    from metazoo.run import Validation

    suite = host.suites.get("sinusoid").factory()
    tasks = list(TaskList(suite, "val", 4, 0, 4))
    learner = _Scripted([math.nan, 3.0, 1.0, 2.0])
    validation = Validation(learner, suite, tasks, torch.device("cpu"), Progress("x", 1, None, mode="off"))
    for step in range(4):
        validation.check(step, 0.0, 0.0, math.nan)
    assert validation.best_step == 2 and validation.best_state["weight"].item() == 1.0


def test_peak_memory_is_per_run(host):
    from metazoo.run import PeakMemory

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs")
    import resource

    from metazoo.malloc import tune_malloc

    tune_malloc()  # as in zoo bench: freed memory stays in the process
    ballast = [torch.ones(50 * 2**20 // 4) for _ in range(10)]  # 500 MB touched by an earlier "run"
    del ballast
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    memory = PeakMemory(torch.device("cpu"))
    assert "during the run" in memory.method
    start = memory.read()
    assert start < lifetime_mb - 300
    during = torch.ones(100 * 2**20 // 4)  # 100 MB touched during the run
    assert memory.read() - start > 90
    del during


# -- configuration errors stop everything, loudly -----------------------------------------------------


@pytest.mark.skipif(not DATA.exists(), reason=f"Omniglot data not found at {DATA}")
def test_dry_run_of_several_benchmarks_gives_the_data_dir_only_to_the_suite_that_reads_data(zoo, tmp_path):
    code, stdout, stderr = zoo("bench", "--benchmark", "sinusoid,omniglot-5w1s", "--data-dir", str(DATA),
                               "--out", str(tmp_path), "--dry-run")
    assert code == 0, stderr
    assert "omniglot-5w1s: maml seed 0: to run" in stdout and "sinusoid: maml seed 0: to run" in stdout
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("case", ["missing", "garbage"])
def test_missing_or_corrupt_data_stops_the_bench_before_any_run(zoo, tmp_path, case):
    data = tmp_path / "data"
    if case == "garbage":
        data.mkdir()
        for name in ("images_background.zip", "images_evaluation.zip"):
            (data / name).write_bytes(b"not a zip at all")
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--benchmark", "omniglot-5w1s", "--algos", "protonet", "--data-dir",
                               str(data), "--out", str(out))
    assert code == 2 and stdout == "", stderr
    (line,) = stderr.splitlines()
    assert line.startswith("zoo: error: ") and ("not found" if case == "missing" else "images_background.zip") in line
    assert not list(out.rglob("*.json"))


def test_data_dir_does_not_reach_suites_without_data(zoo, tmp_path):
    code, stdout, stderr = zoo("bench", "--suite", "sinusoid", "--algos", "fomaml", "--steps", "3",
                               "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "-q")
    assert code == 0, stderr
    assert "--data-dir" in stderr and "is not used" in stderr


@pytest.mark.parametrize(("args", "spec", "message"), [
    (["--suite", "sinusoid", "--ways", "3"], None, "with --ways 3: [protocol] of suite sinusoid: unknown setting 'ways'"),
    ([], 'suite = "sinusoid"\n[published.maml]\ncitation = "x"\n', "[published.maml]: missing setting 'value'"),
    ([], 'suite = "sinusoid"\n[training]\nsteps = 0\n', "steps must be > 0"),
])
def test_configuration_errors_exit_2_naming_the_cause_and_write_nothing(zoo, tmp_path, args, spec, message):
    if spec is not None:
        (tmp_path / "bad.toml").write_text(spec)
        args = ["--benchmark", str(tmp_path / "bad.toml")]
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", *args, "--out", str(out))
    assert code == 2 and message in stderr and len(stderr.splitlines()) == 1, stderr
    assert not list(out.rglob("*.json"))


def test_a_table_of_failed_runs_names_its_metric():
    summary = summarize([record("b", "a", [], status="failed", metric="accuracy"),
                         {**record("b", "c", [], status="failed"), "metric": None}])
    assert "test None" not in render(summary, "md") and "| test accuracy (%) " in render(summary, "md")


def test_concurrent_benches_do_not_share_a_probe_file(zoo, tmp_path):
    (tmp_path / ".zoo-write-test").mkdir()  # what another process's probe may be at any moment
    code, _, stderr = zoo("bench", "--suite", "sinusoid", "--algos", "fomaml", "--steps", "2", "--out",
                          str(tmp_path), "-q")
    assert code == 0, stderr


# -- average ranks -------------------------------------------------------------------------------------


def test_average_ranks_only_over_tables_where_the_algorithms_met():
    records = [record("x", "a", [0.9, 0.9]), record("x", "b", [0.8, 0.8]), record("x", "c", [0.7, 0.7]),
               record("y", "a", [0.1, 0.1]), record("y", "b", [0.8, 0.8]),
               record("alone", "c", [0.99, 0.99])]
    ranks, note = average_ranks(summarize(records))
    ranks = ranks.set_index("label")
    # c ran in x and alone: not in every table where two or more met (x, y), so not ranked
    assert ranks["average rank"].to_dict() == {"a": 1.5, "b": 1.5} and ranks["tables"].tolist() == [2, 2]
    assert "alone" in note and "not in every table, so not ranked: c" in note


# -- progress in logs ------------------------------------------------------------------------------------


def test_progress_lines_when_output_is_not_a_terminal(zoo, tmp_path):
    spec = tiny_spec(tmp_path)
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--progress-every", "0.000001",
                          "--out", str(tmp_path / "a"))
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("tiny: fomaml seed 0: step ")]
    assert lines and "/6, loss " in lines[-1] and "last validation" in lines[-1] and "elapsed" in lines[-1]
    assert "left" in lines[1]  # the first line has no rate to estimate from yet
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--progress-every", "0.000001",
                          "--out", str(tmp_path / "b"), "--quiet")
    assert code == 0 and " step " not in stderr


# -- data-parallel runs share the record reader and the run lock -------------------------------------


def _train(tmp_path: Path, spec: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1",
           "OMP_NUM_THREADS": "1"}
    rendezvous = tmp_path / f"rendezvous-{len(list(tmp_path.glob('rendezvous-*')))}"
    return subprocess.run([sys.executable, "-m", "metazoo.train", "--benchmark", str(spec), "--algo", "fomaml",
                           "--out", str(out), "--init-method", f"file://{rendezvous}"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_metazoo_train_reruns_a_corrupt_record_and_respects_a_claimed_run(tmp_path, host):
    from metazoo.records import RunLock
    from metazoo.run import Run

    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    path = Run(load_benchmark(spec), host.algorithms.get("fomaml"), 0).path(out)
    path.parent.mkdir(parents=True)
    path.write_text("{half a record")
    done = _train(tmp_path, spec, out)
    assert done.returncode == 0 and "not readable JSON" in done.stderr, done.stderr
    assert json.loads(path.read_text())["status"] == "ok"

    path.unlink()
    lock = RunLock(path)
    assert lock.acquire()
    try:
        claimed = _train(tmp_path, spec, out)
    finally:
        lock.release()
    assert claimed.returncode == 0 and f"pid {os.getpid()}; not started" in claimed.stderr, claimed.stderr
    assert not path.exists()


# -- the published folders -------------------------------------------------------------------------------


def _published_commands() -> list[tuple[Path, str]]:
    return [(command, line) for command in sorted((ROOT / "results").rglob("COMMAND"))
            for line in command.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("command_file", "line"), _published_commands(),
                         ids=[str(c.parent.relative_to(ROOT)) for c, _ in _published_commands()])
def test_every_published_folder_has_a_record_for_each_run_of_its_command(zoo, monkeypatch, command_file, line):
    args = shlex.split(line)
    while "=" in args[0]:  # environment settings such as OMP_NUM_THREADS=1
        args.pop(0)
    assert args[:2] == ["zoo", "bench"], line
    if "--data-dir" in args and not (ROOT / args[args.index("--data-dir") + 1]).exists():
        pytest.skip("the command needs data that is not on this machine")
    monkeypatch.chdir(ROOT)
    code, stdout, stderr = zoo(*args[1:], "--dry-run")
    assert code == 0, stderr
    assert stdout.splitlines()[-1].startswith("0 of "), f"{command_file}: runs without a record:\n{stdout}"


# -- a training protocol per algorithm ---------------------------------------------------------------


def test_an_algorithm_meta_trains_on_its_own_training_protocol(zoo, tmp_path, monkeypatch):
    from metazoo.plugins.sinusoid import Sinusoid

    seen = []
    sample = Sinusoid.sample

    def spy(self, split, num_tasks, generator):
        batch = sample(self, split, num_tasks, generator)
        seen.append((split, batch.query_x.shape[1]))
        return batch

    monkeypatch.setattr(Sinusoid, "sample", spy)
    spec = tmp_path / "own.toml"
    spec.write_text('suite = "sinusoid"\n[protocol]\nqueries = 10\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n'
                    "[training]\nsteps = 3\n[algorithms.maml]\nmeta_batch = 2\n"
                    "[training_protocol.maml]\nqueries = 1\n")
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "maml,fomaml", "--out", str(out), "-q")
    assert code == 0, stderr
    assert {q for split, q in seen if split == "train"} == {1, 10}  # maml trains on 1 query, fomaml on 10
    assert {q for split, q in seen if split != "train"} == {10}  # both are tested on the benchmark's protocol
    records = {r["algorithm"]: r for r in (json.loads(p.read_text()) for p in (out / "own" / "runs").glob("*.json"))}
    assert records["maml"]["training_protocol"]["queries"] == 1 and records["maml"]["protocol"]["queries"] == 10
    assert records["fomaml"]["training_protocol"]["queries"] == 10


@pytest.mark.skipif(not DATA.exists(), reason=f"Omniglot data not found at {DATA}")
def test_a_training_way_is_refused_for_model_algorithm_learners_only(zoo, tmp_path):
    spec = tmp_path / "ways.toml"
    spec.write_text('suite = "omniglot"\n[protocol]\nways = 5\nshots = 1\n'
                    "[training_protocol.protonet]\nways = 20\nqueries = 5\n[training_protocol.maml]\nways = 20\n")
    args = ["bench", "--benchmark", str(spec), "--data-dir", str(DATA), "--out", str(tmp_path), "--dry-run"]
    code, stdout, _ = zoo(*args, "--algos", "protonet")
    assert code == 0 and "to run" in stdout
    code, _, stderr = zoo(*args, "--algos", "maml")
    assert code == 2 and "[training_protocol.maml]: a model-algorithm learner trains and tests one model" in stderr


def test_a_hyperparameter_added_by_newer_code_does_not_split_a_row():
    old = record("b", "maml", [0.5, 0.5], seed=0, hyperparameters={"inner_lr": 0.1})
    new = record("b", "maml", [0.7, 0.7], seed=1, hyperparameters={"inner_lr": 0.1, "lr_schedule": "constant"})
    changed = record("b", "maml", [0.9, 0.9], seed=0, hyperparameters={"inner_lr": 0.5}, key="c")
    assert list(summarize([old, new])["seeds"]) == [2]
    assert sorted(summarize([old, new, changed])["label"]) == ["maml (inner_lr=0.1)", "maml (inner_lr=0.5)"]


def test_cpu_runs_record_the_allocator_settings(host):
    from metazoo.benchmark import Benchmark, Training
    from metazoo.malloc import tune_malloc
    from metazoo.run import Run, execute

    record = execute(Run(Benchmark(name="m", suite="sinusoid", training=Training(steps=1)),
                         host.algorithms.get("fomaml"), 0), host, torch.device("cpu"))
    assert record["allocator"] == tune_malloc()
    if sys.platform.startswith("linux"):
        assert record["allocator"] == "glibc malloc, mmap and trim thresholds 1 GiB"


def test_no_training_step_of_the_published_runs_shares_a_generator_with_a_val_or_test_task():
    from metazoo.evaluation import task_seed

    def low(seed):  # what torch's CPU generator keeps of a seed
        return seed & 0xFFFFFFFF

    records = [json.loads(p.read_text()) for p in (ROOT / "results").rglob("runs/*.json")]
    assert records
    for evaluation, seed, steps in {(r["evaluation"]["eval_seed"], r["seed"], r["train"]["steps"])
                                    for r in records if r["status"] == "ok"}:
        held_out = {low(task_seed(split, evaluation, i)) for split in ("val", "test") for i in range(600)}
        assert not [step for step in range(steps) if low(task_seed("train", seed, step)) in held_out]


def test_a_resumed_run_estimates_the_time_left_from_its_own_progress(monkeypatch):
    from metazoo import progress

    clock = iter([0.0, 0.0, 100.0, 200.0])  # started, first update, two more
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    lines = []
    bar = progress.Progress("r", steps=None, seconds=7200, mode="lines", every_s=50, write=lines.append)
    bar.update(1001, 0.5, budget_used_s=3600)  # resumed halfway through its budget
    bar.update(1101, 0.5, budget_used_s=3700)  # 100 budget seconds in 100 s
    bar.update(1201, 0.5, budget_used_s=3800)
    assert len(lines) == 2 and lines[-1].endswith("about 56 min 40 s left")  # (7200 − 3800) s at 1 s/s


# -- a spec that extends another -----------------------------------------------------------------------


def test_a_spec_extends_another_and_changes_only_what_it_gives(tmp_path):
    base = load_benchmark(builtin_benchmarks()["omniglot-reproduce-5w1s"])
    spec = tmp_path / "equal-budget.toml"
    spec.write_text('extends = "omniglot-reproduce-5w1s"\ndescription = "the same, 300 CPU s"\n'
                    "[training]\ntime = 300\n[algorithms.maml]\neval_inner_steps = 3\n")
    derived = load_benchmark(spec)
    assert derived.name == "equal-budget" and derived.description == "the same, 300 CPU s"
    assert derived.training.time == 300 and derived.training.clock == "cpu"  # merged key by key
    assert derived.algorithms["maml"] == {**base.algorithms["maml"], "eval_inner_steps": 3}
    assert derived.algorithms["protonet"] == base.algorithms["protonet"]
    assert derived.protocol == base.protocol and derived.hash() == base.hash()  # the same test tasks
    assert derived.training_protocols == base.training_protocols and derived.published == base.published
    (tmp_path / "two.toml").write_text('extends = "equal-budget.toml"\n[protocol]\nshots = 5\n')
    two = load_benchmark(tmp_path / "two.toml")
    assert two.protocol["shots"] == 5 and two.training.time == 300  # a chain, by relative path


@pytest.mark.parametrize(("text", "message"), [
    ('extends = "nope"\n', "extends 'nope', which is neither a built-in benchmark"),
    ("extends = 3\n", "extends must name a benchmark"),
    ('extends = "loop.toml"\n', "which extends it back (a cycle)"),
])
def test_a_bad_extends_is_a_clear_error(tmp_path, text, message):
    from metazoo.errors import ZooError

    (tmp_path / "loop.toml").write_text(text)
    with pytest.raises(ZooError, match=re.escape(message)):
        load_benchmark(tmp_path / "loop.toml")
