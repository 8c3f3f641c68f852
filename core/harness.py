"""The benchmark harness: meta-train one (algorithm, benchmark, seed), validate, keep the best
state, test on the benchmark's fixed task list and record everything; and run many such runs,
resumably, on an executor (DESIGN §6)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import metazoo
import torch
from metazoo.benchmark import Benchmark, benchmark_from_dict
from metazoo.errors import UsageError, ZooError
from metazoo.learner import MetaLearner
from metazoo.manager import Zoo
from metazoo.records import SCHEMA, RunLock, read_record, record_path, write_record
from metazoo.registry import Entry
from metazoo.tasks import TaskSuite, task_metrics
from tqdm import tqdm

if TYPE_CHECKING:
    from metazoo.executors import Executor


class DivergedError(ZooError):
    """The meta-training loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; accepted: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {name!r}; accepted: cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True)
class Run:
    """One (algorithm, benchmark, seed): everything needed to execute and identify it."""

    benchmark: Benchmark
    algorithm: Entry
    seed: int

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.benchmark.algorithms.get(self.algorithm.name, {})

    @property
    def key(self) -> str:
        """Identity of the run: algorithm and plugin version, benchmark and protocol hash,
        hyperparameters, seed and budget. A finished run with this key is not run again."""
        blob = json.dumps(
            {
                "algorithm": self.algorithm.name,
                "version": self.algorithm.version,
                "benchmark": self.benchmark.name,
                "protocol": self.benchmark.hash(),
                "hyperparameters": self.hyperparameters,
                "seed": self.seed,
                "budget": dataclasses.asdict(self.benchmark.training),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def path(self, out: Path) -> Path:
        return record_path(out, self.benchmark.name, self.algorithm.name, self.seed, self.key)


def make_suite(zoo: Zoo, benchmark: Benchmark, **options: Any) -> TaskSuite:
    """Build the benchmark's suite; protocol errors name the spec file."""
    entry = zoo.suites.get(benchmark.suite)
    try:
        return entry.factory(**benchmark.protocol, **options)
    except (ZooError, TypeError, ValueError) as exc:
        message = str(exc).removeprefix(f"suite {benchmark.suite}: ")
        raise ZooError(f"{benchmark.source}: [protocol] of suite {benchmark.suite}: {message}") from None


def make_learner(run: Run, suite: TaskSuite) -> MetaLearner:
    """Seed torch, build the suite's backbone and the algorithm around it."""
    torch.manual_seed(run.seed)
    model = suite.make_model()
    try:
        return run.algorithm.factory(model, suite, **run.hyperparameters)
    except TypeError as exc:
        raise ZooError(f"algorithm {run.algorithm.name}: {exc}") from None


def sample_tasks(suite: TaskSuite, split: str, count: int, seed: int, batch_tasks: int):
    """The fixed task list of a split, as batches of at most ``batch_tasks``: a pure function
    of (suite protocol, split, count, seed, batch_tasks), identical for every algorithm."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch_tasks):
        yield suite.sample(split, min(batch_tasks, count - start), generator)


def evaluate(learner: MetaLearner, suite: TaskSuite, batches, device: torch.device) -> torch.Tensor:
    """Per-task test metric ``[n]`` over an iterable of task batches."""
    values = []
    for batch in batches:
        batch = batch.to(device)
        values.append(task_metrics(suite.kind, learner.predict(batch), batch.query_y).cpu())
    return torch.cat(values)


def summary(values: torch.Tensor) -> dict[str, float]:
    """Mean and 95% confidence half-width, 1.96·std/√n, over tasks."""
    n = values.numel()
    std = values.double().std().item() if n > 1 else 0.0
    return {"mean": values.double().mean().item(), "ci95": 1.96 * std / math.sqrt(n), "n": n}


def execute(
    run: Run,
    zoo: Zoo,
    device: torch.device,
    progress: bool = False,
    suite_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Meta-train, validate, test and return the run's record. A failure (an exception, or a
    NaN loss) is recorded with its error instead of raised."""
    started = time.time()
    record = base_record(run, device)
    try:
        record.update(_train_and_test(run, zoo, device, progress, suite_options or {}))
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the other runs go on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    record["wall_time_s"] = time.time() - started
    record["peak_memory_mb"] = peak_memory_mb(device)
    return record


def _train_and_test(run, zoo, device, progress, suite_options) -> dict[str, Any]:
    bench, evaluation, budget = run.benchmark, run.benchmark.evaluation, run.benchmark.training
    suite = make_suite(zoo, bench, **suite_options)
    learner = make_learner(run, suite).to(device)
    meta_batch = learner.config.meta_batch
    train_stream = torch.Generator().manual_seed(run.seed)
    val_batches = list(
        sample_tasks(suite, "val", evaluation.val_tasks, evaluation.eval_seed + 1, evaluation.batch_tasks)
    )
    better: Callable[[float, float], bool] = (
        (lambda a, b: a > b) if suite.higher_is_better else (lambda a, b: a < b)
    )

    history, best = [], None
    train_time, budget_time, last_validation, step, loss = 0.0, 0.0, 0.0, 0, math.nan
    budget_clock = time.process_time if budget.clock == "cpu" else time.perf_counter
    bar = tqdm(total=budget.steps, desc=f"{run.algorithm.name} seed {run.seed}", disable=not progress,
               leave=False, unit="step", dynamic_ncols=True)
    while (budget.steps is None or step < budget.steps) and (budget.time is None or budget_time < budget.time):
        tick, budget_tick = time.perf_counter(), budget_clock()
        batch = suite.sample("train", meta_batch, train_stream).to(device)
        loss = learner.meta_train_step(batch)["loss"]
        train_time += time.perf_counter() - tick
        budget_time += budget_clock() - budget_tick
        step += 1
        if not math.isfinite(loss):
            raise DivergedError(f"meta-training loss became {loss} at step {step}")
        bar.update()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss:.4g}")
        if (budget.val_every and step % budget.val_every == 0) or (
            budget.val_every_s and budget_time - last_validation >= budget.val_every_s
        ):
            best = _validate(learner, suite, val_batches, device, step, train_time, history, best, better)
            last_validation = budget_time
    bar.close()
    if not history or history[-1]["step"] != step:
        best = _validate(learner, suite, val_batches, device, step, train_time, history, best, better)
    learner.load_state_dict(best["state"])

    test_batches = sample_tasks(suite, "test", evaluation.test_tasks, evaluation.eval_seed, evaluation.batch_tasks)
    per_task = evaluate(learner, suite, test_batches, device)
    return {
        "hyperparameters": dataclasses.asdict(learner.config),
        "protocol": suite.protocol(),
        "metric": suite.metric,
        "higher_is_better": suite.higher_is_better,
        "test": {**summary(per_task), "per_task": per_task.tolist()},
        "validation": history,
        "best_step": best["step"],
        "train": {
            "steps": step,
            "tasks": step * meta_batch,
            "time_s": train_time,
            "tasks_per_s": step * meta_batch / train_time if train_time else 0.0,
            "final_loss": loss,
        },
    }


def _validate(learner, suite, val_batches, device, step, train_time, history, best, better):
    value = evaluate(learner, suite, val_batches, device).mean().item()
    history.append({"step": step, "time_s": train_time, "value": value})
    if best is None or better(value, best["value"]):
        state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
        return {"step": step, "value": value, "state": state}
    return best


def base_record(run: Run, device: torch.device) -> dict[str, Any]:
    bench = run.benchmark
    published = bench.published.get(run.algorithm.name)
    return {
        "schema": SCHEMA,
        "key": run.key,
        "algorithm": run.algorithm.name,
        "family": run.algorithm.family,
        "plugin": run.algorithm.source,
        "plugin_version": run.algorithm.version,
        "benchmark": bench.name,
        "benchmark_source": bench.source,
        "suite": bench.suite,
        "protocol_hash": bench.hash(),
        "evaluation": dataclasses.asdict(bench.evaluation),
        "budget": dataclasses.asdict(bench.training),
        "seed": run.seed,
        "spec": bench.to_dict(),
        "published": dataclasses.asdict(published) if published else None,
        "device": device_name(device),
        "torch": torch.__version__,
        "metazoo": metazoo.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def failed_record(run: Run, device: torch.device, error: str) -> dict[str, Any]:
    """The record of a run that ended without one of its own (its worker died, say)."""
    return {**base_record(run, device), "status": "failed", "error": error}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@functools.cache
def git_commit() -> str | None:
    """The commit of the metazoo source tree (``…-dirty`` with uncommitted changes), when it is
    a git checkout; read once per process, so later commits do not relabel code already loaded."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def plan(
    zoo: Zoo,
    specs: list[Benchmark],
    algorithms: list[str],
    seeds: list[int],
    suite_options: dict[str, Any] | None = None,
    warn: Callable[[str], None] = print,
) -> list[Run]:
    """Check every benchmark's protocol and every algorithm's hyperparameters before anything
    runs, and list the runs: benchmarks × algorithms × seeds, in that order.

    ``algorithms`` are names or shell patterns; ``["*"]`` takes every algorithm that fits each
    suite, while a model-data learner named explicitly is an error if no suite is a
    classification suite.
    """
    entries = zoo.algorithms.select(algorithms)
    explicit = algorithms != ["*"]
    runs, placed = [], set()
    for spec in specs:
        zoo.suites.get(spec.suite)
        for section, tables in (("algorithms", spec.algorithms), ("published", spec.published)):
            for name in sorted(set(tables) - set(zoo.algorithms.names())):
                warn(f"{spec.source}: [{section}.{name}] is for no registered algorithm; "
                     f"available: {', '.join(zoo.algorithms.names())}")
        suite = make_suite(zoo, spec, **(suite_options or {}))
        fits = [e for e in entries if suite.kind == "classification" or e.family != "model-data"]
        for entry in fits:
            make_learner(Run(spec, entry, 0), suite)
            placed.add(entry.name)
            runs.extend(Run(spec, entry, seed) for seed in seeds)
    unplaced = [e.name for e in entries if e.name not in placed]
    if explicit and unplaced:
        suites = sorted({spec.suite for spec in specs})
        raise UsageError(f"{', '.join(unplaced)}: model-data learners need a classification suite, and "
                         f"{' and '.join(suites)} {'is a regression suite' if len(suites) == 1 else 'are regression suites'}")
    return runs


def run_from_record(
    zoo: Zoo, path: Path, suite_options: dict[str, Any] | None = None, warn: Callable[[str], None] = print
) -> Run:
    """The run a record was made by: its spec, algorithm and seed, checked as a spec is. A plugin
    version or resolved hyperparameters that differ from the record's are warned about."""
    problems: list[str] = []
    record = read_record(path, warn=problems.append)
    if record is None:
        raise UsageError(problems[0] if problems else f"run record {path} does not exist")
    if not isinstance(record.get("spec"), dict):
        raise ZooError(f"{path}: the record has no 'spec' (it predates self-contained records); "
                       "re-run it from its benchmark spec")
    spec = benchmark_from_dict(record["spec"], f"{path} [spec]")
    run = Run(spec, zoo.algorithms.get(record["algorithm"]), record["seed"])
    learner = make_learner(run, make_suite(zoo, spec, **(suite_options or {})))
    if run.key != record["key"]:
        warn(f"{path}: {run.algorithm.name} is now {run.algorithm.source} version {run.algorithm.version}, "
             f"the record has version {record.get('plugin_version')}: the re-run gets a new key")
    resolved = json.loads(json.dumps(dataclasses.asdict(learner.config)))
    recorded = record.get("hyperparameters", resolved)
    changed = sorted(k for k in resolved.keys() | recorded.keys() if resolved.get(k) != recorded.get(k))
    if changed:
        warn(f"{path}: hyperparameters {', '.join(changed)} now resolve to other values than the record's")
    return run


def bench(
    runs: list[Run],
    executor: Executor,
    out: Path,
    device: torch.device,
    force: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    poll_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Run ``runs`` on ``executor`` and return their records, in order.

    A run with a successful record under ``out`` is kept (with ``force``, only if it was made
    after this call began); a failed, corrupt or missing one is run. Each run is claimed with a
    :class:`RunLock` while it executes, so concurrent calls on one directory share the work
    and never run a run twice: a run claimed by another live process is waited for, and taken
    over if that process dies without its record. Records are written here, atomically, as each
    run finishes; an interruption loses only the runs in progress.
    """
    began = time.time()
    records: dict[int, dict[str, Any]] = {}
    queue = list(range(len(runs)))
    waiting: list[int] = []  # claimed by other processes
    announced: set[int] = set()
    in_flight: dict[int, RunLock] = {}

    def finished(index: int, loud: bool = True) -> dict[str, Any] | None:
        path = runs[index].path(out)
        record = read_record(path, warn=lambda message: loud and warn(f"{message}; running it again"))
        if record is None or record.get("status") != "ok":
            return None
        if force and path.stat().st_mtime < began:
            return None
        return record

    try:
        while queue or in_flight or waiting:
            while queue and len(in_flight) < executor.slots:
                index = queue.pop(0)
                run = runs[index]
                label = f"{run.benchmark.name}: {run.algorithm.name} seed {run.seed}"
                lock = RunLock(run.path(out))
                record = finished(index)
                if record is None and not lock.acquire():
                    if index not in announced:
                        log(f"{label}: running in {lock.holder()}; waiting for it")
                        announced.add(index)
                    waiting.append(index)
                    continue
                if record is None and (record := finished(index, loud=False)) is not None:
                    lock.release()  # it finished elsewhere between our look and our claim
                if record is not None:
                    done = "by another process" if index in announced else "before"
                    log(f"{label}: done {done}, kept ({run.path(out)})")
                    records[index] = record
                    continue
                for leftover in run.path(out).parent.glob(f".{run.path(out).name}.*.tmp"):
                    leftover.unlink(missing_ok=True)  # from a writer that was killed
                in_flight[index] = lock
                executor.submit(index, run)
            if in_flight:
                for index, outcome in executor.wait():
                    run = runs[index]
                    record = outcome if isinstance(outcome, dict) else failed_record(run, device, str(outcome))
                    write_record(record, run.path(out))
                    in_flight.pop(index).release()
                    records[index] = record
                    log(_outcome_line(record))
            elif waiting:
                time.sleep(poll_s)
                queue, waiting = waiting, []
    finally:
        executor.close()
        for lock in in_flight.values():
            lock.release()
    return [records[i] for i in range(len(runs))]


def _outcome_line(record: dict[str, Any]) -> str:
    label = f"{record['benchmark']}: {record['algorithm']} seed {record['seed']}"
    if record["status"] != "ok":
        return f"{label}: FAILED: {record['error']}"
    test, train = record["test"], record["train"]
    return (f"{label}: {record['metric']} {test['mean']:.4g} ± {test['ci95']:.2g} "
            f"({train['steps']} steps, {train['time_s']:.1f} s)")
