"""Executors of benchmark runs: in this process, a local pool of processes, or a Ray cluster.

The ``zoo bench`` process claims each run (:class:`metazoo.records.RunLock`), hands it to an
executor, writes the record the executor returns and releases the claim. Workers never write
records: a Ray worker on another machine need not see the results directory, and one writer per
run keeps claims and records consistent. A worker builds its own :class:`~metazoo.manager.Zoo`
from the parent's plugin set (blocked plugins, entry-point autoloading) and checks that it gives
the run the same key, i.e. the same plugin versions.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch
from metazoo.benchmark import Benchmark
from metazoo.checkpoint import checkpoint_path
from metazoo.errors import UsageError, ZooError
from metazoo.manager import AUTOLOAD_ENV, Zoo, get_plugin_manager
from metazoo.progress import Mode
from metazoo.run import Run, execute, resolve_device
from tqdm import tqdm

#: What a run ends in: its record, or the error that kept the worker from making one.
Outcome = dict[str, Any] | ZooError


class WorkerDied(ZooError):
    """The process executing a run died (killed, out of memory) more often than retried."""


@dataclass(frozen=True)
class WorkerContext:
    """What every worker needs besides the run itself."""

    blocked: tuple[str, ...] = ()  # plugin names blocked in the parent (-p no:NAME)
    autoload: bool = True  # load the ``metazoo`` entry points
    device: str = "cpu"
    data_dir: str | None = None  # --data-dir, for the suites that read data
    threads: int | None = None  # torch threads per worker (None: torch's default; Ray's is 1)
    progress: Mode = "off"  # "auto": a bar on a terminal, else a line a minute; "off"
    progress_every_s: float = 60.0
    out: str | None = None  # the results directory, where runs keep checkpoints and logs (None: neither)
    checkpoint_every_s: float = 300.0
    loggers: tuple[str, ...] = ()  # zoo bench --log

    @classmethod
    def of(cls, zoo: Zoo, device: str, data_dir: str | None = None, threads: int | None = None,
           progress: Mode = "off", progress_every_s: float = 60.0, out: str | None = None,
           checkpoint_every_s: float = 300.0, loggers: tuple[str, ...] = ()) -> WorkerContext:
        blocked = tuple(name for name, plugin in zoo.pm.list_name_plugin() if plugin is None)
        return cls(blocked, not os.environ.get(AUTOLOAD_ENV), device, data_dir, threads, progress,
                   progress_every_s, out, checkpoint_every_s, tuple(loggers))

    def execute(self, run: Run, zoo: Zoo, progress: Mode) -> dict[str, Any]:
        """:func:`metazoo.run.execute` of ``run`` with this context's settings."""
        record = run.path(Path(self.out)) if self.out is not None else None
        saved = checkpoint_path(record) if record is not None else None
        log_dir = record.parent.parent / "logs" / record.stem if record is not None and self.loggers else None
        return execute(run, zoo, resolve_device(self.device), progress, self.data_dir, self.progress_every_s,
                       saved, self.checkpoint_every_s, self.loggers, log_dir)


@dataclass(frozen=True)
class Job:
    """A run as sent to a worker: the algorithm by name, and the key the parent expects."""

    benchmark: Benchmark
    algorithm: str
    seed: int
    key: str

    @classmethod
    def of(cls, run: Run) -> Job:
        return cls(run.benchmark, run.algorithm.name, run.seed, run.key)


_zoos: dict[tuple[tuple[str, ...], bool], Zoo] = {}


def run_job(job: Job, context: WorkerContext) -> dict[str, Any]:
    """Execute ``job`` in a worker process and return its record; progress, if any, as lines."""
    plugins = (context.blocked, context.autoload)
    if plugins not in _zoos:
        _zoos[plugins] = Zoo(get_plugin_manager(blocked=context.blocked, autoload=context.autoload))
    zoo = _zoos[plugins]
    if context.threads:
        torch.set_num_threads(context.threads)
    run = Run(job.benchmark, zoo.algorithms.get(job.algorithm), job.seed)
    if run.key != job.key:
        raise ZooError(f"the worker has {job.algorithm} from {run.algorithm.source}, which gives "
                       "another run key than the parent's: install the same plugins everywhere")
    return context.execute(run, zoo, "lines" if context.progress != "off" else "off")


class Executor(ABC):
    """Runs up to ``slots`` runs at once; ``wait`` returns the outcomes of finished ones."""

    slots: int = 1

    @abstractmethod
    def submit(self, ticket: int, run: Run) -> None:
        """Start ``run``; its outcome comes back from :meth:`wait` under ``ticket``."""

    @abstractmethod
    def wait(self) -> list[tuple[int, Outcome]]:
        """Block until some submitted run finishes; may return nothing (a run was retried)."""

    @abstractmethod
    def close(self) -> None:
        """Stop whatever still runs."""


class InProcess(Executor):
    """One run after another in this process, with the parent's Zoo."""

    def __init__(self, zoo: Zoo, context: WorkerContext) -> None:
        self.zoo, self.context = zoo, context
        self._queue: list[tuple[int, Run]] = []

    def submit(self, ticket: int, run: Run) -> None:
        self._queue.append((ticket, run))

    def wait(self) -> list[tuple[int, Outcome]]:
        ticket, run = self._queue.pop(0)
        return [(ticket, self.context.execute(run, self.zoo, self.context.progress))]

    def close(self) -> None:
        """Nothing runs in the background."""
        self._queue.clear()


@dataclass
class _Worker:
    process: Any  # multiprocessing.context.SpawnProcess
    conn: Connection
    ticket: int | None = None
    job: Job | None = None


class ProcessPool(Executor):
    """``workers`` processes started with ``spawn``, one run each at a time.

    A worker that dies during a run (a signal, the OOM killer) is replaced and the run sent again,
    up to ``retries`` times. Workers ignore Ctrl-C (the parent stops them), and exit on their own
    when the parent dies, SIGKILL included.
    """

    def __init__(self, context: WorkerContext, workers: int, retries: int = 2,
                 log: Callable[[str], None] = print) -> None:
        self.context, self.slots, self.retries, self.log = context, workers, retries, log
        self._mp = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._tries: dict[int, int] = {}

    def submit(self, ticket: int, run: Run) -> None:
        self._send(ticket, Job.of(run))

    def _send(self, ticket: int, job: Job) -> None:
        while True:
            worker = self._idle.pop() if self._idle else self._start()
            try:
                worker.conn.send((ticket, job))
                break
            except OSError:  # an idle worker that died since its last run
                worker.process.join()
                worker.conn.close()
        worker.ticket, worker.job = ticket, job
        self._busy[ticket] = worker

    def _start(self) -> _Worker:
        conn, child = self._mp.Pipe()
        process = self._mp.Process(target=_pool_worker, args=(child, self.context), daemon=True,
                                   name="metazoo-worker")
        process.start()
        child.close()
        return _Worker(process, conn)

    def wait(self) -> list[tuple[int, Outcome]]:
        busy = list(self._busy.values())
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        outcomes: list[tuple[int, Outcome]] = []
        for worker in busy:
            try:
                if not worker.conn.poll():
                    if worker.process.is_alive():
                        continue
                    raise EOFError
                ticket, outcome = worker.conn.recv()
            except (EOFError, OSError):
                outcomes.extend(self._died(worker))
                continue
            del self._busy[ticket]
            self._idle.append(worker)
            outcomes.append((ticket, outcome if isinstance(outcome, dict) else ZooError(outcome)))
        return outcomes

    def _died(self, worker: _Worker) -> list[tuple[int, Outcome]]:
        worker.process.join()
        worker.conn.close()
        ticket, job = worker.ticket, worker.job
        del self._busy[ticket]
        code = worker.process.exitcode
        cause = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        tries = self._tries[ticket] = self._tries.get(ticket, 0) + 1
        if tries <= self.retries:
            self.log(f"{job.benchmark.name}: {job.algorithm} seed {job.seed}: worker process died ({cause}); "
                     f"running it again ({tries}/{self.retries})")
            self._send(ticket, job)
            return []
        return [(ticket, WorkerDied(f"worker process died ({cause}), {tries} time(s)"))]

    def close(self) -> None:
        workers = self._idle + list(self._busy.values())
        for worker in workers:
            worker.process.terminate()
        for worker in workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._idle, self._busy = [], {}


def _pool_worker(conn: Connection, context: WorkerContext) -> None:
    """Main loop of a pool worker: receive a job, send back its outcome, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    # tqdm's default lock is a multiprocessing semaphore, which a killed worker would leak
    tqdm.set_lock(threading.RLock())
    while True:
        try:
            ticket, job = conn.recv()
        except EOFError:
            return
        try:
            outcome: dict[str, Any] | str = run_job(job, context)
        except Exception as exc:  # reported to the parent, which records the run as failed
            outcome = f"{type(exc).__name__}: {exc}"
        conn.send((ticket, outcome))


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


class RayExecutor(Executor):
    """Runs fanned out as Ray tasks (one CPU each, or one GPU on a CUDA device); Ray runs a task
    again, up to ``retries`` times, when its worker dies.

    Connects to ``address`` (or ``RAY_ADDRESS``), or uses the Ray this process already
    initialised, or starts a local one on this machine, bound to 127.0.0.1, without a dashboard;
    it shuts down only a Ray it started.
    """

    def __init__(self, context: WorkerContext, address: str | None = None, retries: int = 2) -> None:
        if not (address or os.environ.get("RAY_ADDRESS")):
            # Read when ray is imported: a single-machine Ray whose servers listen on 127.0.0.1.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'metazoo[ray]'") from None
        self.ray, self.context = ray, context
        self._owned = not ray.is_initialized()
        if self._owned:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        gpu = context.device.startswith("cuda")
        resources = ray.cluster_resources()
        self.slots = max(1, int(resources.get("GPU" if gpu else "CPU", 1)))
        self._task = ray.remote(run_job).options(
            num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_retries=retries
        )
        self.retries = retries
        self._refs: dict[Any, int] = {}

    def submit(self, ticket: int, run: Run) -> None:
        context = dataclasses.replace(self.context, out=None)  # a Ray worker need not see --out
        if context.device.startswith("cuda"):  # Ray gives the task one visible GPU
            context = dataclasses.replace(context, device="cuda")
        self._refs[self._task.remote(Job.of(run), context)] = ticket

    def wait(self) -> list[tuple[int, Outcome]]:
        ray = self.ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        outcomes: list[tuple[int, Outcome]] = []
        for ref in ready:
            ticket = self._refs.pop(ref)
            try:
                outcomes.append((ticket, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                outcomes.append((ticket, ZooError(f"{type(cause).__name__}: {cause}")))
            except ray.exceptions.RayError as exc:
                outcomes.append((ticket, WorkerDied(
                    f"Ray worker died (retried {self.retries} times): {type(exc).__name__}")))
        return outcomes

    def close(self) -> None:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        self._refs = {}
        if self._owned:
            self.ray.shutdown()
