"""One run, (algorithm, benchmark, seed): build it, meta-train it within its budget, validate it
periodically and keep the best state, test that state on the benchmark's fixed task list (and,
for the spec's ``adaptation_steps``, on the same list after each number of inner steps), and
return its record."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
import re
import resource
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import metazoo
import torch
from metazoo import checkpoint
from metazoo.benchmark import Benchmark
from metazoo.config import EXECUTION_SETTINGS
from metazoo.errors import UsageError, ZooError
from metazoo.evaluation import (
    TaskList,
    adapts_by_steps,
    by_adaptation_steps,
    evaluate,
    summary,
    train_batch,
)
from metazoo.learner import MetaLearner
from metazoo.malloc import release_free_memory, tune_malloc
from metazoo.manager import Zoo
from metazoo.progress import Mode, Progress
from metazoo.records import SCHEMA, record_path
from metazoo.registry import Entry
from metazoo.tasks import TaskSuite, trains_on


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


#: Set by ``zoo bench``'s signal handler beside the KeyboardInterrupt it raises: a run checks it
#: before every step, so the run stops even where the exception was lost (an exception raised
#: while torch.compile's frame-evaluation callback runs can be swallowed by it; SIGTERM was seen
#: ignored for over a minute by runs of compiled steps).
STOP = threading.Event()


@dataclass(frozen=True)
class Run:
    """One (algorithm, benchmark, seed): everything needed to execute and identify it."""

    benchmark: Benchmark
    algorithm: Entry
    seed: int
    # Every hyperparameter, defaults included, as planning resolved them; not part of the key.
    resolved: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters the spec gives this algorithm (the learner resolves defaults)."""
        return self.benchmark.algorithms.get(self.algorithm.name, {})

    @property
    def result_settings(self) -> dict[str, Any]:
        """:attr:`hyperparameters` without the execution settings (``EXECUTION_SETTINGS``)."""
        return {k: v for k, v in self.hyperparameters.items() if k not in EXECUTION_SETTINGS}

    @property
    def key(self) -> str:
        """Identity of the run: algorithm and plugin version, benchmark and protocol hash,
        hyperparameters (but the execution settings), budget and seed. A finished run with this
        key is not run again."""
        blob = json.dumps(
            {
                "algorithm": self.algorithm.name,
                "version": self.algorithm.version,
                "benchmark": self.benchmark.name,
                "protocol": self.benchmark.hash(),
                "hyperparameters": self.result_settings,
                "seed": self.seed,
                "budget": dataclasses.asdict(self.benchmark.training),
                # only where one is given, so that runs without one keep their keys
                **({"training_protocol": self.training_protocol} if self.training_protocol else {}),
                **({"backbone": self.benchmark.backbone} if self.benchmark.backbone else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def training_protocol(self) -> dict[str, Any]:
        """The protocol settings this algorithm meta-trains with, where they differ from the test's."""
        return self.benchmark.training_protocols.get(self.algorithm.name, {})

    @property
    def backbone(self) -> str | None:
        """The registered backbone this run trains (its algorithm's ``backbone`` setting, else the
        benchmark's); None for the suite's own model."""
        return self.hyperparameters.get("backbone") or self.benchmark.backbone

    @property
    def label(self) -> str:
        return f"{self.benchmark.name}: {self.algorithm.name} seed {self.seed}"

    def path(self, out: Path) -> Path:
        return record_path(out, self.benchmark.name, self.algorithm.name, self.seed, self.key)


def make_suite(zoo: Zoo, benchmark: Benchmark, data_dir: str | None = None) -> TaskSuite:
    """Build the benchmark's suite; ``data_dir`` reaches it only if it reads data. Protocol
    errors name the spec file and the command-line options that changed the protocol."""
    entry = zoo.suites.get(benchmark.suite)
    try:
        return entry.factory(**benchmark.protocol, **suite_options(entry, data_dir))
    except (ZooError, TypeError, ValueError) as exc:
        message = str(exc).removeprefix(f"suite {benchmark.suite}: ")
        where = benchmark.source + (f" with {benchmark.overridden}" if benchmark.overridden else "")
        raise ZooError(f"{where}: [protocol] of suite {benchmark.suite}: {message}") from None


def suite_options(entry: Entry, data_dir: str | None) -> dict[str, Any]:
    """What a suite's factory gets besides its protocol: ``data_dir``, if the suite reads data."""
    return {"data_dir": data_dir} if entry.info.get("uses_data") else {}


#: Budgets from which ``compile = "auto"`` compiles the outer step: compiling takes 5-25 s and
#: a compiled sinusoid step saves about 3 ms, so 10,000 steps repay it several times over.
LONG_RUN = {"steps": 10_000, "time": 600.0}


def make_learner(run: Run, suite: TaskSuite, backbones=None) -> MetaLearner:
    """Seed torch, build the run's backbone (a registered one from ``backbones``, else the
    suite's own model) and the algorithm around it."""
    hyperparameters = {k: v for k, v in run.hyperparameters.items() if k != "backbone"}
    torch.manual_seed(run.seed)
    if run.backbone:
        if backbones is None:
            raise ZooError(f"{run.label}: backbone {run.backbone!r} needs the backbone registry")
        model = backbones.get(run.backbone).factory(suite)
    else:
        model = suite.make_model()
    try:
        learner = run.algorithm.factory(model, suite, **hyperparameters)
    except TypeError as exc:
        raise ZooError(f"algorithm {run.algorithm.name}: {exc}") from None
    budget = run.benchmark.training
    if (budget.steps or 0) >= LONG_RUN["steps"] or (budget.time or 0) >= LONG_RUN["time"]:
        learner.long_run = True  # "auto" compilation pays back its seconds here
    return learner


def resolved_hyperparameters(learner: MetaLearner, run: Run) -> dict[str, Any]:
    """Every hyperparameter of ``learner``, defaults included, as JSON values."""
    config = getattr(learner, "config", None)
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(run.hyperparameters)
    if run.backbone:
        values["backbone"] = run.backbone
    return json.loads(json.dumps(values))


def execute(run: Run, zoo: Zoo, device: torch.device, progress: Mode = "off",
            data_dir: str | None = None, progress_every_s: float = 60.0,
            checkpoint: Path | None = None, checkpoint_every_s: float = 300.0,
            loggers: tuple[str, ...] = (), log_dir: Path | None = None) -> dict[str, Any]:
    """Meta-train, validate, test and return the run's record. A failure (an exception, or a
    NaN loss) is recorded with its error instead of raised. With ``checkpoint`` (a file), the
    run saves its state there every ``checkpoint_every_s`` seconds and resumes from it if it
    holds this run's state (see :mod:`metazoo.checkpoint`). The run callbacks of the plugins
    (``zoo_run_start``, ``zoo_run_validation``, ``zoo_run_end``) get ``loggers`` and ``log_dir``."""
    started = time.time()
    record = base_record(run, device)
    record["allocator"] = tune_malloc() if device.type == "cpu" else "torch CUDA caching allocator"
    memory = PeakMemory(device)
    hooks, where = zoo.pm.hook, {"loggers": tuple(loggers), "log_dir": log_dir}
    started_hooks = False
    try:
        suite = make_suite(zoo, run.benchmark, data_dir)
        train_suite = make_suite(zoo, run.benchmark.training_benchmark(run.algorithm.name), data_dir) \
            if run.training_protocol else suite
        record.update(protocol=suite.protocol(), metric=suite.metric, higher_is_better=suite.higher_is_better,
                      training_protocol=train_suite.protocol())
        learner = make_learner(run, suite, zoo.backbones).to(device)
        record["hyperparameters"] = resolved_hyperparameters(learner, run)
        started_hooks = True
        hooks.zoo_run_start(run=run, record=record, **where)
        progress_bar = Progress(run.label, run.benchmark.training.steps, run.benchmark.training.time,
                                progress, progress_every_s)
        saver = Saver(checkpoint, run.key, learner, checkpoint_every_s) if checkpoint else None

        def validated(step: int, value: float, time_s: float, loss: float) -> None:
            hooks.zoo_run_validation(run=run, step=step, value=value, time_s=time_s, loss=loss, **where)

        try:
            record.update(_train_and_test(run, suite, learner, device, progress_bar, saver, train_suite, validated))
        finally:
            progress_bar.close()
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the other runs go on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    record["wall_time_s"] = time.time() - started
    record["peak_memory_mb"], record["peak_memory"] = memory.read(), memory.method
    if started_hooks:
        try:
            hooks.zoo_run_end(run=run, record=record, **where)
        except Exception as exc:  # a logger that fails at the end fails the run, with its error
            record.update(status="failed", error=f"run_end callback: {type(exc).__name__}: {exc}")
    return record


class Saver:
    """Writes the run's checkpoint when ``every_s`` seconds have passed since the last one."""

    def __init__(self, path: Path, key: str, learner: MetaLearner, every_s: float) -> None:
        self.path, self.key, self.learner, self.every_s = path, key, learner, every_s
        self.last = time.perf_counter()

    def resume(self) -> dict[str, Any] | None:
        return checkpoint.load(self.path, self.key, self.learner)

    def maybe_save(self, loop: dict[str, Any]) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            checkpoint.save(self.path, self.key, self.learner, loop)
            self.last = time.perf_counter()


def _train_and_test(run: Run, suite: TaskSuite, learner: MetaLearner, device: torch.device,
                    progress: Progress, saver: Saver | None = None,
                    train_suite: TaskSuite | None = None, validated=None) -> dict[str, Any]:
    evaluation, budget = run.benchmark.evaluation, run.benchmark.training
    meta_batch = learner.config.meta_batch  # tasks per step, or examples for labelled batches
    labelled = trains_on(learner) == "labelled"
    val_tasks = list(TaskList(suite, "val", evaluation.val_tasks, evaluation.eval_seed, evaluation.batch_tasks))
    validation = Validation(learner, suite, val_tasks, device, progress, validated)

    train_time, budget_time, compile_time, last_validation, step, loss = 0.0, 0.0, 0.0, 0.0, 0, math.nan
    resumed: list[int] = []
    loop = saver.resume() if saver else None
    if loop is not None:
        step, loss, train_time, budget_time = loop["step"], loop["loss"], loop["train_time"], loop["budget_time"]
        compile_time, last_validation, resumed = loop["compile_time"], loop["last_validation"], loop["resumed"]
        validation.history, validation.best_value = loop["history"], loop["best_value"]
        validation.best_step, validation.best_state = loop["best_step"], loop["best_state"]
        resumed = [*resumed, step]
    budget_clock = time.process_time if budget.clock == "cpu" else time.perf_counter
    while (budget.steps is None or step < budget.steps) and (budget.time is None or budget_time < budget.time):
        if STOP.is_set():
            raise KeyboardInterrupt
        tick, budget_tick = time.perf_counter(), budget_clock()
        batch = train_batch(train_suite or suite, run.seed, step, meta_batch, labelled).to(device)
        stats = learner.meta_train_step(batch)
        loss = stats["loss"]
        if "compile_s" in stats:  # the step that compiled: counted apart, not in the budget
            compile_time += time.perf_counter() - tick
        else:
            train_time += time.perf_counter() - tick
            budget_time += budget_clock() - budget_tick
        step += 1
        if not math.isfinite(loss):
            raise DivergedError(f"meta-training loss became {loss} at step {step}")
        progress.update(step, loss, budget_time)
        if (budget.val_every and step % budget.val_every == 0) or (
            budget.val_every_s and budget_time - last_validation >= budget.val_every_s
        ):
            validation.check(step, train_time, budget_time, loss)
            last_validation = budget_time
        if saver:
            saver.maybe_save({
                "step": step, "loss": loss, "train_time": train_time, "budget_time": budget_time,
                "compile_time": compile_time, "last_validation": last_validation, "resumed": resumed,
                "history": validation.history, "best_value": validation.best_value,
                "best_step": validation.best_step, "best_state": validation.best_state,
            })
    if not validation.history or validation.history[-1]["step"] != step:
        validation.check(step, train_time, budget_time, loss)
    learner.load_state_dict(validation.best_state)

    test_tasks = TaskList(suite, "test", evaluation.test_tasks, evaluation.eval_seed, evaluation.batch_tasks)
    per_task = evaluate(learner, suite, test_tasks, device)
    test = {**summary(per_task), "tasks_digest": test_tasks.digest(), "per_task": per_task.tolist()}
    if evaluation.adaptation_steps and adapts_by_steps(learner):  # the same tasks again, k inner steps each
        test["by_adaptation_steps"] = by_adaptation_steps(learner, suite, test_tasks, device,
                                                          evaluation.adaptation_steps)
    trained = step * meta_batch
    # A learner that trains on labelled batches meets no task before the test: it reports examples.
    throughput = {"tasks": 0, "tasks_per_s": math.nan, "trains_on": "labelled", "examples": trained,
                  "examples_per_s": trained / train_time if train_time else 0.0} if labelled else {
                  "tasks": trained, "tasks_per_s": trained / train_time if train_time else 0.0}
    return {
        "test": test,
        "validation": validation.history,
        "best_step": validation.best_step,
        "train": {
            "steps": step,
            "time_s": train_time,
            "budget_s": budget_time,
            "compile_s": compile_time,
            "resumed_at_steps": resumed,
            **throughput,
            "final_loss": loss,
        },
    }


class Validation:
    """Periodic validation on a fixed task list, keeping a copy of the best state. A NaN score
    is worse than any number, so a diverged validation is never the state that gets tested."""

    def __init__(self, learner: MetaLearner, suite: TaskSuite, tasks, device: torch.device,
                 progress: Progress, validated=None) -> None:
        self.learner, self.suite, self.tasks, self.device, self.progress = learner, suite, tasks, device, progress
        self.validated = validated  # validated(step, value, time_s, loss): the run callbacks
        self.history: list[dict[str, float]] = []
        self.best_value, self.best_step, self.best_state = math.nan, None, None

    def check(self, step: int, train_time: float, budget_time: float, loss: float) -> None:
        """Validate at ``step``, after ``train_time`` wall-clock seconds of training and
        ``budget_time`` seconds on the budget's clock (both without validation)."""
        value = evaluate(self.learner, self.suite, self.tasks, self.device).mean().item()
        self.history.append({"step": step, "time_s": train_time, "budget_s": budget_time, "value": value})
        self.progress.validated(value)
        if self.validated is not None:
            self.validated(step, value, train_time, loss)
        if self.best_state is None or self._better(value, self.best_value):
            self.best_value, self.best_step = value, step
            self.best_state = {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    def _better(self, value: float, best: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(best):
            return True
        return value > best if self.suite.higher_is_better else value < best


class PeakMemory:
    """The peak memory of one run: on CUDA the peak allocated by torch on the device (reset at
    the start of the run); on Linux CPUs the process's peak resident set size (VmHWM) since the
    start of the run, reset through ``/proc/self/clear_refs`` after the allocator has given
    back the memory earlier runs freed (``malloc_trim``); elsewhere the process's lifetime
    peak (``ru_maxrss``), which includes earlier runs of the same process."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.method = "CUDA peak allocated by torch during the run"
            return
        release_free_memory()  # what earlier runs of this process freed but the allocator kept
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "peak resident set size of the process during the run (VmHWM)"
        except OSError:
            self.method = "peak resident set size of the process so far (ru_maxrss)"

    def read(self) -> float:
        """Megabytes (2**20 bytes)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if "VmHWM" in self.method:
            match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            if match:
                return int(match.group(1)) / 2**10
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


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
        "hyperparameters": run.resolved if run.resolved is not None else dict(run.hyperparameters),
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
