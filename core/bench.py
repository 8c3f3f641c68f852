"""A bench of runs: plan benchmarks × algorithms × seeds (every configuration error found before
anything runs), then execute the runs on an executor, resumably, with one record per run."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metazoo.benchmark import Benchmark, benchmark_from_dict
from metazoo.checkpoint import checkpoint_path
from metazoo.errors import UsageError, ZooError
from metazoo.manager import Zoo
from metazoo.records import RunLock, finished_record, read_record, write_record
from metazoo.registry import suite_kinds
from metazoo.run import Run, failed_record, make_learner, make_suite, resolved_hyperparameters
from metazoo.tasks import SPLITS, offers_labelled_batches, trains_on

if TYPE_CHECKING:
    import torch
    from metazoo.executors import Executor


def plan(
    zoo: Zoo,
    specs: list[Benchmark],
    algorithms: list[str],
    seeds: list[int],
    data_dir: str | None = None,
    warn: Callable[[str], None] = print,
    compile: bool | None = None,
) -> list[Run]:
    """Check every benchmark's protocol and data and every algorithm's hyperparameters before
    anything runs, and list the runs: benchmarks × algorithms × seeds, in that order.

    ``algorithms`` are names or shell patterns; ``["*"]`` takes every algorithm that fits each
    suite (its kinds of suite, and labelled batches for a learner with ``trains_on =
    "labelled"``), while an algorithm named explicitly that fits no suite is an error saying
    what it needs. ``compile`` (``--compile``/``--no-compile``), where given, sets the
    ``compile`` hyperparameter of every learner that has one (not part of the run key).
    """
    entries = zoo.algorithms.select(algorithms)
    explicit = algorithms != ["*"]
    runs, placed, suites = [], set(), {}
    for spec in specs:
        zoo.suites.get(spec.suite)
        for section, tables in (("algorithms", spec.algorithms), ("training_protocol", spec.training_protocols),
                                ("published", spec.published)):
            for name in sorted(set(tables) - set(zoo.algorithms.names())):
                warn(f"{spec.source}: [{section}.{name}] is for no registered algorithm; "
                     f"available: {', '.join(zoo.algorithms.names())}")
        suite = make_suite(zoo, spec, data_dir)
        suite.prepare()
        _probe(suite, SPLITS)
        labelled = offers_labelled_batches(suite)
        suites[spec.suite] = f"{suite.kind}{', labelled batches' if labelled else ''}"
        fits = [e for e in entries if (suite_kinds(e) is None or suite.kind in suite_kinds(e))
                and (labelled or trains_on(e.factory) != "labelled")]
        for entry in fits:
            learner = make_learner(Run(spec, entry, 0), suite, zoo.backbones)
            if spec.training_protocols.get(entry.name):
                _check_training_protocol(zoo, spec, entry, suite, data_dir)
            own = spec
            if compile is not None and hasattr(getattr(learner, "config", None), "compile"):
                tables = {**spec.algorithms, entry.name: {**spec.algorithms.get(entry.name, {}), "compile": compile}}
                own = dataclasses.replace(spec, algorithms=tables)
                learner = make_learner(Run(own, entry, 0), suite, zoo.backbones)
            resolved = resolved_hyperparameters(learner, Run(own, entry, 0))
            placed.add(entry.name)
            runs.extend(Run(own, entry, seed, resolved) for seed in seeds)
    unplaced = [e for e in entries if e.name not in placed]
    if explicit and unplaced:
        described = ", ".join(f"{s} ({k})" for s, k in sorted(suites.items()))
        raise UsageError("; ".join(_requirement(e) for e in unplaced) + f", and the benchmarks' suites are {described}")
    return runs


def _requirement(entry) -> str:
    """What suite an algorithm takes, for the error that none of the benchmarks' suites fits it."""
    kinds = " or ".join(suite_kinds(entry) or ("any",))
    if trains_on(entry.factory) == "labelled":
        return (f"{entry.name} trains on labelled batches: it takes only {kinds} suites that offer them "
                "(TaskSuite.sample_labelled and num_classes, as omniglot and images do)")
    return f"{entry.name} takes only {kinds} suites"


def _probe(suite, splits) -> None:
    """Sample one task from each split a run will draw from, so that a protocol a split cannot
    make (too few classes, or examples per class) stops the bench before any run, with the
    suite's own message."""
    import torch

    for split in splits:
        suite.sample(split, 1, torch.Generator().manual_seed(0))


def _check_training_protocol(zoo: Zoo, spec: Benchmark, entry, suite, data_dir: str | None) -> None:
    """The training protocol builds a suite, and the tested model fits its tasks: a
    model-algorithm learner's head is sized by the test protocol, so its way may not change."""
    train_suite = make_suite(zoo, spec.training_benchmark(entry.name), data_dir)
    train_suite.prepare()
    _probe(train_suite, ("train",))  # a training protocol's tasks come from the train split only
    if trains_on(entry.factory) == "labelled" and not offers_labelled_batches(train_suite):
        raise ZooError(f"{spec.source} [training_protocol.{entry.name}]: {entry.name} trains on labelled "
                       f"batches, which the training protocol's suite does not offer")
    if entry.family == "model-algorithm" and getattr(train_suite, "ways", None) != getattr(suite, "ways", None):
        raise ZooError(f"{spec.source} [training_protocol.{entry.name}]: a model-algorithm learner trains and "
                       f"tests one model, whose head has as many outputs as the test protocol's ways "
                       f"({getattr(suite, 'ways', None)}); its training protocol may change shots and "
                       "queries, not ways")


def run_from_record(
    zoo: Zoo, path: Path, data_dir: str | None = None, warn: Callable[[str], None] = print
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
    suite = make_suite(zoo, spec, data_dir)
    suite.prepare()
    learner = make_learner(run, suite, zoo.backbones)
    if run.key != record["key"]:
        warn(f"{path}: the run now has key {run.key}, the record {record['key']} ({run.algorithm.name} is "
             f"{run.algorithm.source} version {run.algorithm.version}, the record's is "
             f"{record.get('plugin_version')}; or the benchmark's protocol hash changed): the re-run gets a new key")
    resolved = resolved_hyperparameters(learner, run)
    recorded = record.get("hyperparameters", resolved)
    changed = sorted(k for k in resolved.keys() | recorded.keys() if resolved.get(k) != recorded.get(k))
    if changed:
        warn(f"{path}: hyperparameters {', '.join(changed)} now resolve to other values than the record's")
    return run


def pending(runs: list[Run], out: Path) -> list[Run]:
    """The runs of ``runs`` that have no successful record under ``out``."""
    return [run for run in runs if finished_record(run.path(out), warn=lambda message: None) is None]


def run_bench(
    runs: list[Run],
    executor: Executor,
    out: Path,
    device: torch.device,
    force: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    poll_s: float = 1.0,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Run ``runs`` on ``executor`` and return their records, in order.

    A run with a successful record under ``out`` is kept (with ``force``, only if it was made
    after this call began); a failed, corrupt or missing one is run. Each run is claimed with a
    :class:`RunLock` while it executes, so concurrent calls on one directory share the work
    and never run a run twice: a run claimed by another live process is waited for, and taken
    over if that process dies without its record. Records are written here, atomically, as each
    run finishes (with ``command``, the command line that asked for it); an interruption loses
    only the runs in progress.
    """
    began = time.time()
    records: dict[int, dict[str, Any]] = {}
    queue = list(range(len(runs)))
    waiting: list[int] = []  # claimed by other processes
    announced: set[int] = set()
    in_flight: dict[int, RunLock] = {}

    def finished(index: int, loud: bool = True) -> dict[str, Any] | None:
        path = runs[index].path(out)
        record = finished_record(path, warn=lambda message: loud and warn(f"{message}; running it again"))
        if record is not None and force and path.stat().st_mtime < began:
            return None
        return record

    try:
        while queue or in_flight or waiting:
            while queue and len(in_flight) < executor.slots:
                index = queue.pop(0)
                run = runs[index]
                lock = RunLock(run.path(out))
                record = finished(index)
                if record is None and not lock.acquire():
                    if index not in announced:
                        log(f"{run.label}: running in {lock.holder()}; waiting for it")
                        announced.add(index)
                    waiting.append(index)
                    continue
                if record is None and (record := finished(index, loud=False)) is not None:
                    lock.release()  # it finished elsewhere between our look and our claim
                if record is not None:
                    done = "by another process" if index in announced else "before"
                    log(f"{run.label}: done {done}, kept ({run.path(out)})")
                    records[index] = record
                    continue
                for name in (run.path(out).name, checkpoint_path(run.path(out)).name):
                    for leftover in run.path(out).parent.glob(f".{name}.*.tmp"):
                        leftover.unlink(missing_ok=True)  # from a writer that was killed
                in_flight[index] = lock
                executor.submit(index, run)
            if in_flight:
                for index, outcome in executor.wait():
                    run = runs[index]
                    record = outcome if isinstance(outcome, dict) else failed_record(run, device, str(outcome))
                    if command is not None:
                        record["command"] = command
                    write_record(record, run.path(out))
                    checkpoint_path(run.path(out)).unlink(missing_ok=True)  # the record supersedes it
                    in_flight.pop(index).release()
                    records[index] = record
                    log(outcome_line(record))
            elif waiting:
                time.sleep(poll_s)
                queue, waiting = waiting, []
    finally:
        executor.close()
        for lock in in_flight.values():
            lock.release()
    return [records[i] for i in range(len(runs))]


def outcome_line(record: dict[str, Any]) -> str:
    label = f"{record['benchmark']}: {record['algorithm']} seed {record['seed']}"
    if record["status"] != "ok":
        return f"{label}: FAILED: {record['error']}"
    test, train = record["test"], record["train"]
    return (f"{label}: {record['metric']} {test['mean']:.4g} ± {test['ci95']:.2g} "
            f"({train['steps']} steps, {train['time_s']:.1f} s)")

