"""Speed benchmark: meta-iterations per second of second-order MAML on sinusoid, the core's
vectorised engine against a plain per-task reference loop (issue 2, item 9).

Both paths do the same work per meta-iteration: from a pre-sampled meta-batch (MLP 1-40-40-1,
K=10 support and 10 query points per task, 1 inner step at α=0.01), the second-order
meta-gradient of the mean query loss, one outer step of the same Adam optimiser (unless
``--gradient-only``), and the loss as a Python float. Before timing, both paths are checked to
give the same meta-gradient and loss from the same weights. Engine and loop alternate in short
rounds, so that load from other processes hits both alike; the table gives medians.

    python -m metazoo.benchmarks.speed [--device cpu] [--batches 25,100] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from metazoo import Zoo, get_plugin_manager
from metazoo.tasks import TaskBatch
from tabulate import tabulate
from torch.func import functional_call

INNER_LR = 0.01
OUTER_LR = 1e-3


class ReferenceLoop:
    """Second-order MAML written the plain way: one task at a time, summed, one backward."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        # The engine's optimiser class and settings, so that the outer steps cost the same.
        self.optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)

    def meta_gradient(self, batch: TaskBatch) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        total = 0.0
        for sx, sy, qx, qy in zip(*batch.tensors()):
            support = F.mse_loss(functional_call(self.model, params, (sx,)), sy)
            grads = torch.autograd.grad(support, list(params.values()), create_graph=True)
            fast = {name: p - INNER_LR * g for (name, p), g in zip(params.items(), grads)}
            total = total + F.mse_loss(functional_call(self.model, fast, (qx,)), qy)
        loss = total / batch.num_tasks
        loss.backward()
        return loss.detach()

    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        loss = self.meta_gradient(batch)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item()}

    def gradient_step(self, batch: TaskBatch) -> float:
        """The meta-gradient alone, as ``ModelAlgorithmLearner.meta_gradient`` computes it."""
        loss = self.meta_gradient(batch)
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def make_pair(num_tasks: int, device: torch.device, seed: int = 0):
    """The ``maml`` learner from the registry, a reference loop on a copy of the same weights,
    and one pre-sampled meta-batch on ``device``."""
    zoo = Zoo(get_plugin_manager(autoload=False))  # the built-in maml and sinusoid only
    suite = zoo.suites.get("sinusoid").factory(shots=10, queries=10)
    torch.manual_seed(seed)
    model = suite.make_model()
    reference_model = copy.deepcopy(model).to(device)
    learner = zoo.algorithms.get("maml").factory(
        model, suite, meta_batch=num_tasks, inner_steps=1, inner_lr=INNER_LR,
        outer_lr=OUTER_LR, outer_optimizer="adam",
    ).to(device)
    reference = ReferenceLoop(reference_model, learner.optimizer)
    batch = suite.sample("train", num_tasks, torch.Generator().manual_seed(seed)).to(device)
    return learner, reference, batch


def check_same_meta_gradient(learner, reference: ReferenceLoop, batch: TaskBatch) -> None:
    """Assert that engine and reference compute the same meta-gradient and loss (the weights
    are left unchanged)."""
    learner.zero_grad(set_to_none=True)
    loss = learner.meta_gradient(batch)
    expected = reference.meta_gradient(batch).item()
    if abs(loss - expected) > 1e-5 * abs(expected):
        raise AssertionError(f"losses differ: engine {loss}, reference {expected}")
    for (name, p), q in zip(learner.model.named_parameters(), reference.model.parameters()):
        if not torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6):
            raise AssertionError(f"meta-gradients differ on {name}: "
                                 f"max |Δ| = {(p.grad - q.grad).abs().max().item():.3g}")
    learner.zero_grad(set_to_none=True)
    reference.optimizer.zero_grad(set_to_none=True)


def iterations_per_second(step: Callable[[], object], seconds: float, device: torch.device) -> float:
    """Run ``step`` for about ``seconds`` and return completed iterations per second."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    count = 0
    while True:
        step()
        count += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def measure(num_tasks: int, device: torch.device, seconds: float, rounds: int,
            gradient_only: bool = False) -> dict:
    """Median it/s of engine and reference over ``rounds`` interleaved rounds, and the median
    of the per-round ratios."""
    learner, reference, batch = make_pair(num_tasks, device)
    check_same_meta_gradient(learner, reference, batch)
    if gradient_only:
        def engine_step():
            loss = learner.meta_gradient(batch)
            learner.zero_grad(set_to_none=True)
            return loss

        reference_step = lambda: reference.gradient_step(batch)  # noqa: E731
    else:
        engine_step = lambda: learner.meta_train_step(batch)  # noqa: E731
        reference_step = lambda: reference.meta_train_step(batch)  # noqa: E731
    for step in (engine_step, reference_step):  # warm-up: allocator, optimiser state
        for _ in range(3):
            step()
    engine, loop = [], []
    for _ in range(rounds):
        engine.append(iterations_per_second(engine_step, seconds, device))
        loop.append(iterations_per_second(reference_step, seconds, device))
    ratios = [e / r for e, r in zip(engine, loop)]
    return {
        "meta-batch": num_tasks,
        "loop it/s": statistics.median(loop),
        "engine it/s": statistics.median(engine),
        "engine tasks/s": statistics.median(engine) * num_tasks,
        "ratio": statistics.median(ratios),
        "ratio range": f"{min(ratios):.1f}–{max(ratios):.1f}",
        "execution": learner.execution,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with family and model numbers where given."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or "unknown"
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def describe(device: torch.device) -> list[tuple[str, str]]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("device", str(device)),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("CPU", f"{cpu_model()}, {cores} cores available"),
        ("torch threads", str(torch.get_num_threads())),
    ]
    if hasattr(os, "getloadavg"):  # other processes share the cores: say how busy they were
        loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
        rows.append(("load average", f"{loads} (1, 5, 15 min)"))
    if device.type == "cuda":
        rows.append(("GPU", torch.cuda.get_device_name(device)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batches", default="25,100", help="meta-batch sizes (default: 25,100)")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for this process")
    parser.add_argument("--gradient-only", action="store_true",
                        help="time the meta-gradient without the outer optimiser step")
    parser.add_argument("--format", default="github", help="tabulate table format")
    args = parser.parse_args(argv)

    try:
        batches = [int(b) for b in args.batches.split(",")]
        device = torch.device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    threads_bad = args.threads is not None and args.threads <= 0
    if min(batches) <= 0 or args.seconds <= 0 or args.rounds <= 0 or threads_bad:
        parser.error("--batches, --seconds, --rounds and --threads must be positive")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(tabulate(describe(device), tablefmt="plain"))
    work = "meta-gradient only" if args.gradient_only else "meta-gradient + Adam step"
    print("\nsecond-order MAML, sinusoid, MLP 1-40-40-1, K=10, 10 queries, 1 inner step, "
          f"α={INNER_LR}; {work} per iteration; median of {args.rounds} interleaved rounds "
          f"of {args.seconds:g} s\n")
    rows = [measure(b, device, args.seconds, args.rounds, args.gradient_only) for b in batches]
    print(tabulate(rows, headers="keys", tablefmt=args.format, floatfmt=".1f"))
    if hasattr(os, "getloadavg"):
        print(f"\nload average after the run: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
