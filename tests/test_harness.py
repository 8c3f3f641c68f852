"""The benchmark harness: spec validation, several benchmarks, resume after SIGKILL, failed runs,
corrupt records, concurrent processes on one results directory, reproducibility."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from metazoo.bench import plan
from metazoo.benchmark import benchmark_from_dict, load_benchmark
from metazoo.errors import ZooError
from metazoo.manager import Zoo
from metazoo.run import make_suite

FAULTY = Path(__file__).parent / "thirdparty" / "faulty"


def spec_text(suite: str = "sinusoid", training: str = "steps = 4\nval_every = 4", extra: str = "") -> str:
    """A tiny benchmark: few test tasks, a few steps, small meta-batches."""
    tables = "".join(f"[algorithms.{a}]\nmeta_batch = 4\n" for a in ("maml", "fomaml", "anil", "reptile"))
    return (f'suite = "{suite}"\n[evaluation]\ntest_tasks = 20\nval_tasks = 10\n'
            f"[training]\n{training}\n{tables}{extra}")


def write_spec(folder: Path, name: str, **kwargs: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(spec_text(**kwargs))
    return path


def install_faulty(tmp_path_factory) -> Path:
    """``metazoo-faulty`` installed once per test session into a throw-away folder."""
    target = tmp_path_factory.getbasetemp() / "faulty-site"
    if not (target / "metazoo_faulty.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(FAULTY)], check=True, capture_output=True)
    return target


@pytest.fixture
def faulty(tmp_path_factory, monkeypatch) -> Path:
    """The faulty plugin on this process's path (and its spawned workers')."""
    site = install_faulty(tmp_path_factory)
    monkeypatch.syspath_prepend(str(site))
    return site


def records_of(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*/runs/*.json")}


def zoo_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "zoo"), *args]


# -- spec validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('suite = "sinusoid"\nepochs = 3\n', "unknown key 'epochs'; accepted: algorithms, backbone, description,"),
        ('suite = "sinusoid"\n[training]\nsteps = 2.5\n', "[training]: steps must be int or NoneType, got 2.5"),
        ('suite = "sinusoid"\n[evaluation]\ntest_task = 3\n', "unknown setting 'test_task'; accepted: adaptation_steps, batch_tasks"),
        ('suite = "sinusoid"\nprotocol = 3\n', "[protocol] must be a table, got 3"),
        ('suite = "sinusoid"\n[algorithms]\nmaml = 1\n', "[algorithms.maml] must be a table, got 1"),
        ('name = "../up"\nsuite = "sinusoid"\n', "name '../up' must be letters, digits and"),
        ('suite = 7\n', "key 'suite' (the task suite's name, a string) is required"),
    ],
)
def test_spec_errors_name_the_file_the_key_and_what_is_accepted(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ZooError) as error:
        load_benchmark(path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("suite", "protocol", "message"),
    [
        ("sinusoid", "shots = 0", "[protocol] of suite sinusoid: shots must be > 0, got 0"),
        ("sinusoid", 'shots = "five"', "[protocol] of suite sinusoid: shots must be int, got 'five'"),
        ("omniglot", "ways = 500", "ways must be between 2 and 400 (the val split has 400 classes), got 500"),
        ("omniglot", "shots = 0", "[protocol] of suite omniglot: shots must be > 0, got 0"),
        ("hyperplanes", "ways = 3", "unknown setting 'ways'; accepted: dim, queries, shots"),
    ],
)
def test_impossible_protocols_are_refused_before_anything_runs(tmp_path, suite, protocol, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'suite = "{suite}"\n[protocol]\n{protocol}\n')
    with pytest.raises(ZooError) as error:
        make_suite(Zoo(), load_benchmark(path))
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_a_bad_benchmark_among_several_stops_everything_before_the_first_run(zoo, tmp_path):
    good = write_spec(tmp_path, "good")
    bad = tmp_path / "bad.toml"
    bad.write_text('suite = "sinusoid"\n[protocol]\nshots = 0\n')
    code, _, stderr = zoo("bench", "--algos", "fomaml", "--benchmark", f"{good},{bad}", "--out", str(tmp_path / "out"))
    assert code == 2 and f"{bad}: [protocol] of suite sinusoid: shots must be > 0" in stderr
    assert stderr.count("\n") == 1 and not (tmp_path / "out" / "good").exists()


def test_spec_tables_for_unregistered_algorithms_are_warned_about(tmp_path):
    spec = load_benchmark(write_spec(tmp_path, "typo", extra="[algorithms.mamll]\ninner_lr = 0.1\n"))
    warnings: list[str] = []
    runs = plan(Zoo(), [spec], ["fomaml"], [0, 1], warn=warnings.append)
    assert [(r.algorithm.name, r.seed) for r in runs] == [("fomaml", 0), ("fomaml", 1)]
    assert len(warnings) == 1 and "[algorithms.mamll] is for no registered algorithm; available: anil" in warnings[0]


def test_resolved_spec_round_trips_through_a_record(tmp_path):
    spec = load_benchmark(write_spec(tmp_path, "rt", extra='[published.maml]\nvalue = 1.0\ncitation = "x"\n'))
    back = benchmark_from_dict(json.loads(json.dumps(spec.to_dict())), "record")
    assert back.to_dict() == spec.to_dict() and back.hash() == spec.hash()


# -- several benchmarks ---------------------------------------------------------------------------


def test_algorithms_times_benchmarks_times_seeds(zoo, tmp_path):
    sine = write_spec(tmp_path, "sine")
    planes = write_spec(tmp_path, "planes", suite="hyperplanes", extra="[algorithms.protonet]\nmeta_batch = 4\n")
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--algos", "fomaml,protonet", "--benchmark", str(sine),
                               "--benchmark", str(planes), "--seeds", "2", "--out", str(out))
    assert code == 0, stderr
    runs = sorted((r["benchmark"], r["algorithm"], r["seed"], r["status"]) for r in records_of(out).values())
    assert runs == [("planes", "fomaml", 0, "ok"), ("planes", "fomaml", 1, "ok"), ("planes", "protonet", 0, "ok"),
                    ("planes", "protonet", 1, "ok"), ("sine", "fomaml", 0, "ok"), ("sine", "fomaml", 1, "ok")]
    assert "### planes" in stdout and "### sine" in stdout
    assert (out / "sine" / "leaderboard.md").read_text().startswith("### sine")
    assert "protonet" in (out / "planes" / "leaderboard.csv").read_text()


# -- faults -----------------------------------------------------------------------------------------


def test_a_raising_and_a_diverging_algorithm_are_recorded_failed_and_the_rest_complete(zoo, faulty, tmp_path):
    spec = write_spec(tmp_path, "faults")
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--algos", "raiser,nanmaker,fomaml", "--benchmark", str(spec), "--out", str(out))
    assert code == 1 and "zoo: error: 2 of 3 run(s) failed: raiser seed 0" in stderr, stderr  # the table is still written
    records = {r["algorithm"]: r for r in records_of(out).values()}
    assert records["fomaml"]["status"] == "ok"
    assert records["raiser"]["status"] == "failed"
    assert records["raiser"]["error"] == "RuntimeError: faulty plugin: the inner update exploded"
    assert "Traceback" in records["raiser"]["traceback"]
    assert records["nanmaker"]["status"] == "failed"
    assert records["nanmaker"]["error"].startswith("DivergedError: meta-training loss became nan at step 1")
    assert "faults: raiser seed 0: FAILED: RuntimeError" in stderr
    for board in (stdout, zoo("leaderboard", str(out))[1]):
        assert "failed: RuntimeError: faulty plugin: the inner update exploded" in board
        assert "failed: DivergedError: meta-training loss became nan" in board


def test_a_corrupt_record_is_named_and_run_again(zoo, tmp_path):
    spec = write_spec(tmp_path, "corrupt")
    args = ("bench", "--algos", "fomaml", "--benchmark", str(spec), "--out", str(tmp_path / "out"), "-q")
    assert zoo(*args)[0] == 0
    path = next((tmp_path / "out" / "corrupt" / "runs").glob("fomaml-seed0-*.json"))
    path.write_text('{"schema": 1, "key": "trunc')
    code, stdout, stderr = zoo(*args)
    assert code == 0, stderr
    assert f"zoo: warning: {path}: not readable JSON" in stderr and "running it again" in stderr
    assert json.loads(path.read_text())["status"] == "ok" and "fomaml" in stdout


def _stat(pid: int | str) -> list[str]:
    """State, parent pid, ... of a process from Linux /proc; [] if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def running(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"])


def children(pid: int) -> list[int]:
    """Pids of the running child processes of ``pid``."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _stat(p.name)[1:2] == [str(pid)] and running(int(p.name))]


def test_sigkill_in_the_middle_then_resume_loses_and_redoes_nothing_finished(zoo, tmp_path):
    spec = write_spec(tmp_path, "killed", training="time = 0.5\nsteps = 100000\nval_every = 100000")
    out = tmp_path / "out"
    args = ("bench", "--algos", "fomaml,reptile", "--seeds", "2", "--benchmark", str(spec), "--out", str(out))
    process = subprocess.Popen(zoo_command(*args, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.time() + 60
        while not records_of(out) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        workers = children(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate()
    before = {name: (record["created"], (out / "killed" / "runs" / name).stat().st_mtime_ns)
              for name, record in records_of(out).items()}
    assert 1 <= len(before) < 4, "the bench finished before the kill; make its runs longer"
    assert list((out / "killed" / "runs").glob("*.lock")), "the runs in progress left their claims behind"
    deadline = time.time() + 10
    while (left := [pid for pid in workers if running(pid)]) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not left, "the worker processes outlived their parent"

    code, _, stderr = zoo(*args)  # resume, in this process
    assert code == 0, stderr
    after = records_of(out)
    assert len(after) == 4 and all(r["status"] == "ok" for r in after.values())
    for name, (created, mtime) in before.items():
        assert after[name]["created"] == created
        assert (out / "killed" / "runs" / name).stat().st_mtime_ns == mtime
    assert stderr.count("done before, kept") == len(before) and stderr.count(" mse ") == 4 - len(before)
    assert not list((out / "killed" / "runs").glob("*.lock")) and not list(out.rglob("*.tmp"))


def test_two_concurrent_bench_processes_share_the_runs(zoo, tmp_path):
    spec = write_spec(tmp_path, "shared", training="time = 0.4\nsteps = 100000\nval_every = 100000")
    out = tmp_path / "out"
    args = ("bench", "--algos", "fomaml,reptile", "--seeds", "2", "--benchmark", str(spec), "--out", str(out))
    other = subprocess.Popen(zoo_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(out.glob("*/runs/*.lock")) and time.time() < deadline and other.poll() is None:
            time.sleep(0.02)
        code, stdout, stderr = zoo(*args)  # meanwhile, in this process
    finally:
        other_out, other_err = other.communicate(timeout=120)
    assert code == 0 and other.returncode == 0, (stderr, other_err)
    records = records_of(out)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records.values())
    assert stderr.count(" mse ") + other_err.count(" mse ") == 4  # each run trained once, by one process
    assert stderr.count(" mse ") >= 1 and "waiting for it" in stderr and "done by another process" in stderr
    for board in (stdout, other_out):  # and both leaderboards have both algorithms
        assert "fomaml" in board and "reptile" in board


# -- reproducibility ---------------------------------------------------------------------------------


def test_same_seed_same_numbers_and_from_record_reproduces_them(zoo, tmp_path):
    spec = write_spec(tmp_path, "repro")
    first, second, again = (tmp_path / name for name in ("first", "second", "again"))
    for out in (first, second):
        assert zoo("bench", "--algos", "maml", "--benchmark", str(spec), "--out", str(out), "-q")[0] == 0
    (a,), (b,) = records_of(first).values(), records_of(second).values()
    assert a["test"]["per_task"] == b["test"]["per_task"] and a["validation"][-1]["value"] == b["validation"][-1]["value"]
    assert a["spec"]["training"]["steps"] == 4 and a["spec"]["algorithms"]["maml"] == {"meta_batch": 4}

    path = next(first.glob("*/runs/*.json"))
    code, _, stderr = zoo("bench", "--from-record", str(path), "--out", str(again), "-q")
    assert code == 0 and "warning" not in stderr, stderr
    (c,) = records_of(again).values()
    assert c["key"] == a["key"] and c["test"]["per_task"] == a["test"]["per_task"]
    assert Path(c["benchmark_source"]) == Path(f"{path} [spec]")


def test_from_record_refuses_other_run_options_and_records_without_a_spec(zoo, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": 1, "key": "abc", "benchmark": "b", "algorithm": "maml", "seed": 0,
                                "status": "failed"}))
    code, _, stderr = zoo("bench", "--from-record", str(path), "--seeds", "3", "--out", str(tmp_path))
    assert code == 2 and "--from-record takes the benchmark, algorithm, seed and budget" in stderr
    code, _, stderr = zoo("bench", "--from-record", str(path), "--out", str(tmp_path))
    assert code == 2 and f"{path}: the record has no 'spec'" in stderr
    code, _, stderr = zoo("bench", "--from-record", str(tmp_path / "nope.json"), "--out", str(tmp_path))
    assert code == 2 and "does not exist" in stderr


def test_a_stop_request_ends_the_run_even_if_its_interrupt_was_swallowed(tmp_path):
    """zoo bench's signal handler sets metazoo.run.STOP beside raising KeyboardInterrupt; a run
    stops at its next step on the flag alone (the exception may be lost inside torch.compile)."""
    import torch
    from metazoo.bench import plan, run_bench
    from metazoo.executors import InProcess, WorkerContext
    from metazoo.run import STOP

    spec = load_benchmark(write_spec(tmp_path, "stop"))
    zoo = Zoo()
    runs = plan(zoo, [spec], ["fomaml"], [0])
    STOP.set()  # as if the handler ran and its exception vanished
    try:
        with pytest.raises(KeyboardInterrupt):
            run_bench(runs, InProcess(zoo, WorkerContext.of(zoo, "cpu")), tmp_path / "out", torch.device("cpu"),
                      log=lambda message: None)
    finally:
        STOP.clear()
    assert not list((tmp_path / "out").rglob("*.json"))  # no record: the run did not finish
