"""Data-parallel meta-training of one run over torch.distributed processes.

Launch one process per device with ``torchrun``::

    torchrun --nproc_per_node=2 -m metazoo.train --benchmark sinusoid --algo maml --seed 0

Every rank samples the same meta-batch from the same generator and meta-trains on its
contiguous slice of the tasks, or of the examples of a labelled batch (an uneven split is fine:
5 tasks on 2 ranks are 3 + 2). The
learner's :class:`metazoo.engine.GradientPool` sums the meta-gradients, losses and task counts
of all ranks and divides by the global count, so every rank applies the mean meta-gradient of
the whole batch and takes the same optimiser step. The harness runs unchanged on every rank
(:func:`metazoo.run.execute`); rank 0 claims the run with the same lock as ``zoo bench`` (so the
two never run one key at once), reads an earlier record with the same reader, and writes the
record. Backend: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from metazoo.benchmark import find_benchmark
from metazoo.errors import UsageError, ZooError
from metazoo.learner import MetaLearner
from metazoo.manager import Zoo, get_plugin_manager
from metazoo.records import RunLock, finished_record, write_record
from metazoo.registry import Entry
from metazoo.run import Run, execute, make_learner, make_suite, resolve_device
from metazoo.tasks import LabelledBatch, TaskBatch


def shard_bounds(num_tasks: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous share of ``num_tasks`` tasks; the first
    ``num_tasks % world`` ranks take one task more."""
    base, extra = divmod(num_tasks, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _same_on_every_rank(learner: MetaLearner) -> bool:
    """Whether every rank holds the same meta-parameters (compared by per-tensor checksums)."""
    sums = torch.stack([p.detach().double().sum() for p in learner.parameters()])
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))


def data_parallel(learner: MetaLearner, rank: int, world: int) -> MetaLearner:
    """Make ``learner.meta_train_step`` train on this rank's slice of each meta-batch.

    All ranks must call it with the same batch. The first step checks that the ranks start and
    end it with the same parameters: a learner that does not pool its meta-gradient through
    :class:`~metazoo.engine.GradientPool` is a clear error, not a silent divergence.
    """
    step = learner.meta_train_step
    checked = False

    def sharded_step(batch: TaskBatch | LabelledBatch) -> dict[str, float]:
        nonlocal checked
        if len(batch) < world:  # tasks, or the examples of a labelled batch
            raise ZooError(f"a meta-batch of {len(batch)} cannot be split over {world} processes")
        if not checked and not _same_on_every_rank(learner):
            raise ZooError("the processes start from different meta-parameters")
        start, stop = shard_bounds(len(batch), rank, world)
        stats = step(batch[start:stop])
        if not checked and not _same_on_every_rank(learner):
            raise ZooError(f"{learner.name()} does not pool its meta-gradient through "
                           "metazoo.engine.GradientPool, so it cannot be trained data-parallel")
        checked = True
        return stats

    learner.meta_train_step = sharded_step  # type: ignore[method-assign]
    return learner


def sharded_entry(entry: Entry, rank: int, world: int) -> Entry:
    """``entry`` whose factory builds data-parallel learners (same name, version and run key)."""

    def factory(model: torch.nn.Module, suite, **hyperparameters) -> MetaLearner:
        return data_parallel(entry.factory(model, suite, **hyperparameters), rank, world)

    return dataclasses.replace(entry, factory=factory)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m metazoo.train",
        description="Meta-train one (algorithm, benchmark, seed) data-parallel; start it with torchrun.",
    )
    parser.add_argument("--benchmark", required=True, metavar="NAME|PATH",
                        help="a built-in benchmark spec or a TOML file")
    parser.add_argument("--algo", required=True, help="algorithm name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="meta-training steps (overrides the spec)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--data-dir", help="where datasets live (else $METAZOO_DATA)")
    parser.add_argument("--out", default="zoo-results", help="results directory")
    parser.add_argument("--force", action="store_true", help="re-run a run that already has a record")
    parser.add_argument("--init-method", default="env://",
                        help="torch.distributed rendezvous (default env://, as set by torchrun)")
    return parser


def train(args: argparse.Namespace, log: Callable[[str], None]) -> dict | None:
    """Run ``args`` on this process's rank and return its record (None if the run was done
    before, or is running in another process); rank 0 claims the run and writes its record."""
    if args.steps is not None and args.steps <= 0:
        raise UsageError(f"--steps must be a positive number, got {args.steps}")
    device = resolve_device(args.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)

    spec = find_benchmark(args.benchmark)
    if args.steps is not None:
        spec = spec.with_overrides({}, {"steps": args.steps, "time": None})
    if spec.training.time is not None:
        raise UsageError(f"{spec.source}: data-parallel runs need a step budget (ranks must stop at the same "
                         "step), but the spec has a time budget; give --steps N")
    zoo = Zoo(get_plugin_manager())
    entry = zoo.algorithms.get(args.algo)
    suite = make_suite(zoo, spec, args.data_dir)
    suite.prepare()
    probe = make_learner(Run(spec, entry, args.seed), suite, zoo.backbones)
    if probe.config.meta_batch < world:
        raise UsageError(f"meta_batch {probe.config.meta_batch} of {args.algo} is smaller than the {world} processes")

    run = Run(spec, sharded_entry(entry, rank, world), args.seed)
    path = run.path(Path(args.out))
    lock = RunLock(path)
    state = ["run"]
    if rank == 0:
        if not args.force and finished_record(path, warn=lambda m: log(f"{m}; running it again")) is not None:
            state = ["done"]
        elif not lock.acquire():
            state = [f"running in {lock.holder()}"]
    dist.broadcast_object_list(state, src=0)
    if state[0] != "run":
        if rank == 0:
            message = "done before, kept" if state[0] == "done" else f"{state[0]}; not started"
            log(f"{args.algo} seed {args.seed}: {message} ({path}); --force re-runs a finished run")
        return None
    try:
        record = execute(run, zoo, device, progress="auto" if rank == 0 else "off", data_dir=args.data_dir)
        record["data_parallel"] = {"world_size": world, "backend": dist.get_backend()}
        record["command"] = shlex.join(["torchrun", f"--nproc_per_node={world}", "-m", "metazoo.train",
                                        *args.argv])
        if rank == 0:
            write_record(record, path)
    finally:
        lock.release()
    if record["status"] != "ok":
        log(f"{args.algo} seed {args.seed} FAILED: {record['error']}")
    elif rank == 0:
        test = record["test"]
        log(f"{args.algo} seed {args.seed} on {world} processes: {record['metric']} {test['mean']:.4g} "
            f"± {test['ci95']:.2g} ({record['train']['steps']} steps, {record['train']['time_s']:.1f} s); {path}")
    return record


def main(argv: list[str] | None = None) -> int:
    """Entry point: join the process group, train, leave it; errors are one line on stderr."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=args.init_method,
                            rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))
    prefix = f"metazoo.train (rank {dist.get_rank()})"

    def log(message: str) -> None:
        print(f"{prefix}: {message}", file=sys.stderr)

    try:
        record = train(args, log)
    except ZooError as exc:
        log(f"error: {exc}")
        return 2 if isinstance(exc, UsageError) else 1
    finally:
        dist.destroy_process_group()
    return 0 if record is None or record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
