"""Executor overhead: one small `zoo bench` sweep run in this process, on a local pool of worker
processes and on Ray, each timed against the time its runs took (issue 4, item 3).

    python -m metazoo.benchmarks.executors [--algos maml,fomaml,reptile] [--seeds 2] [--steps 50]
        [--benchmark sinusoid] [--executors inprocess,pool,ray] [--workers 2] [--threads 1]

overhead = sweep wall time − Σ run time / runs at once: what starting workers (or Ray), shipping
runs and records and scheduling cost beyond the runs themselves. A run's time is its record's
``wall_time_s`` (meta-training, validation and test). Each executor writes into a fresh results
directory, so none reuses another's records. Ray, if not reachable at ``RAY_ADDRESS``, is started
on this machine (listening on 127.0.0.1) and its start-up is counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from metazoo.bench import plan, run_bench
from metazoo.benchmark import find_benchmark
from metazoo.benchmarks.speed import describe
from metazoo.executors import Executor, InProcess, ProcessPool, RayExecutor, WorkerContext
from metazoo.manager import Zoo
from tabulate import tabulate

EXECUTORS = ("inprocess", "pool", "ray")


def make_executor(name: str, zoo: Zoo, workers: int, threads: int) -> tuple[Executor, str]:
    """The executor ``zoo bench`` would build for ``name`` (with ``threads`` torch threads per
    run, the same for all), and its label."""
    context = WorkerContext.of(zoo, "cpu", threads=threads)
    if name == "ray":
        executor = RayExecutor(context)
        executor.slots = workers
        return executor, f"--executor ray ({workers} at once)"
    if name == "pool":
        return ProcessPool(context, workers), f"--workers {workers}"
    torch.set_num_threads(threads)
    return InProcess(zoo, context), "in-process"


def sweep(name: str, zoo: Zoo, runs: list, workers: int, threads: int, out: Path) -> dict[str, object]:
    start = time.perf_counter()
    executor, label = make_executor(name, zoo, workers, threads)
    startup = time.perf_counter() - start
    records = run_bench(runs, executor, out, torch.device("cpu"), log=lambda message: None)
    wall = time.perf_counter() - start
    for record in records:
        if record["status"] != "ok":
            print(f"{label}: {record['algorithm']} seed {record['seed']} failed: {record['error']}", file=sys.stderr)
    run_time = sum(r.get("wall_time_s", 0.0) for r in records)
    return {
        "executor": label,
        "runs at once": executor.slots,
        "start-up (s)": startup,
        "sweep wall time (s)": wall,
        "Σ run time (s)": run_time,
        "overhead (s)": wall - run_time / executor.slots,
        "failed": sum(r["status"] != "ok" for r in records),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="maml,fomaml,reptile")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--benchmark", default="sinusoid")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--workers", type=int, default=2, help="runs at once for the pool and Ray")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run, every executor alike")
    parser.add_argument("--format", default="github", help="tabulate table format")
    args = parser.parse_args(argv)
    names = args.executors.split(",")
    if set(names) - set(EXECUTORS) or min(args.seeds, args.steps, args.workers, args.threads) <= 0:
        parser.error(f"--executors takes {', '.join(EXECUTORS)}; --seeds, --steps, --workers, --threads must be positive")

    zoo = Zoo()
    spec = find_benchmark(args.benchmark).with_overrides({}, {"steps": args.steps, "time": None})
    runs = plan(zoo, [spec], args.algos.split(","), list(range(args.seeds)))
    print(tabulate(describe(torch.device("cpu")), tablefmt="plain"))
    print(f"\n{spec.name}: {args.algos} × {args.seeds} seeds = {len(runs)} runs of {args.steps} steps, "
          f"{spec.evaluation.val_tasks} val and {spec.evaluation.test_tasks} test tasks each; "
          f"{args.threads} torch thread(s) per run\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-executors-") as folder:
        for name in names:
            rows.append(sweep(name, zoo, runs, args.workers, args.threads, Path(folder) / name))
    print(tabulate(rows, headers="keys", tablefmt=args.format, floatfmt=".1f"))
    if hasattr(os, "getloadavg"):
        print(f"\nload average after the sweeps: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
