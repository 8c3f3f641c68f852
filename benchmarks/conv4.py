"""Speed benchmark of conv4 meta-training steps on Omniglot 5-way 1-shot, against this CPU's limit.

For ProtoNet, first-order and second-order MAML, the seconds per outer step of a plain per-task
loop (one task after another, autograd, one backward), the engine's eager step and its compiled
step, each as a multiple of the loop, and the achieved GFLOP/s: the floating-point operations of
one step (counted by ``torch.utils.flop_counter`` on the loop: convolutions and matrix products,
forward and backward) divided by its time, beside this machine's measured float32 matrix-product
peak at the same thread count. ``--malloc default`` leaves glibc's allocator as it is;
``--malloc tuned`` (the default, what ``zoo bench`` does) raises its mmap and trim thresholds
(see ``metazoo.malloc``). The variants alternate in rounds, so that other load hits them alike.

    python -m metazoo.benchmarks.conv4 [--algos protonet,fomaml,maml] [--rounds 3]
        [--seconds 5] [--threads 1] [--malloc tuned|default] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from metazoo import Zoo, get_plugin_manager
from metazoo.benchmarks.speed import SHARED_OMNIGLOT, ReferenceLoop, describe, load_average
from metazoo.malloc import tune_malloc
from metazoo.tasks import TaskBatch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

SETTINGS = {  # algorithm: (meta-batch, hyperparameters); MAML's Omniglot values (Finn et al. 2017)
    "protonet": (8, {}),
    "fomaml": (32, {"inner_lr": 0.4, "first_order": True}),
    "maml": (32, {"inner_lr": 0.4}),
}


class ProtoLoop:
    """Prototypical Networks written the plain way: one episode at a time, one backward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.embed = model.body
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        total = 0.0
        for sx, sy, qx, qy in zip(*batch.tensors()):
            z = self.embed(torch.cat([sx, qx]))
            support, query = z[: len(sx)], z[len(sx) :]
            ways = int(sy.max()) + 1
            prototypes = torch.stack([support[sy == k].mean(0) for k in range(ways)])
            total = total + F.cross_entropy(-torch.cdist(query, prototypes).pow(2), qy)
        loss = total / batch.num_tasks
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item()}


class MAMLLoop(ReferenceLoop):
    """The plain MAML loop of ``metazoo.benchmarks.speed``, first or second order."""

    def __init__(self, model, optimizer, inner_lr, kind, first_order: bool) -> None:
        super().__init__(model, optimizer, inner_lr, kind)
        self.first_order = first_order

    def meta_gradient(self, batch: TaskBatch) -> float:
        params = dict(self.model.named_parameters())
        total = 0.0
        for sx, sy, qx, qy in zip(*batch.tensors()):
            support = self.loss_fn(torch.func.functional_call(self.model, params, (sx,)), sy)
            grads = torch.autograd.grad(support, list(params.values()), create_graph=not self.first_order)
            fast = {name: p - self.inner_lr * g for (name, p), g in zip(params.items(), grads)}
            total = total + self.loss_fn(torch.func.functional_call(self.model, fast, (qx,)), qy)
        loss = total / batch.num_tasks
        loss.backward()
        return loss.item()


def build(algorithm: str, data_dir: str | None):
    zoo = Zoo(get_plugin_manager(autoload=False))
    suite = zoo.suites.get("omniglot").factory(data_dir=data_dir, ways=5, shots=1, queries=15)
    meta_batch, hyperparameters = SETTINGS[algorithm]
    torch.manual_seed(0)
    model = suite.make_model()
    variants = {
        label: zoo.algorithms.get(algorithm).factory(copy.deepcopy(model), suite, meta_batch=meta_batch,
                                                     compile=compiled, **hyperparameters)
        for label, compiled in (("engine", False), ("compiled", True))
    }
    if algorithm == "protonet":
        loop = ProtoLoop(copy.deepcopy(model))
    else:
        loop = MAMLLoop(copy.deepcopy(model), variants["engine"].optimizer, 0.4, "classification",
                        hyperparameters.get("first_order", False))
    batch = suite.sample("train", meta_batch, torch.Generator().manual_seed(0))
    return {"loop": loop, **variants}, batch


def seconds_per_step(step, seconds: float) -> float:
    started, count = time.perf_counter(), 0
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / count


def matmul_peak(threads: int, size: int = 2048, seconds: float = 2.0) -> float:
    """Float32 GFLOP/s of ``size``×``size`` matrix products (2·n³ flops each)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    return 2 * size**3 / seconds_per_step(lambda: torch.mm(a, b), seconds) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="protonet,fomaml,maml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per variant per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    parser.add_argument("--data-dir", default=str(SHARED_OMNIGLOT))
    args = parser.parse_args(argv)
    algorithms = args.algos.split(",")
    if set(algorithms) - set(SETTINGS) or min(args.rounds, args.seconds, args.threads) <= 0:
        parser.error(f"--algos takes {', '.join(SETTINGS)}; --rounds, --seconds, --threads must be positive")
    allocator = tune_malloc() if args.malloc == "tuned" else "default allocator"
    torch.set_num_threads(args.threads)
    print(tabulate([*describe(torch.device("cpu")), ("allocator", allocator)], tablefmt="plain"))
    peak = matmul_peak(args.threads)
    print(f"\nfloat32 matmul peak, 2048×2048, {args.threads} thread(s): {peak:.1f} GFLOP/s\n")
    rows = []
    for algorithm in algorithms:
        variants, batch = build(algorithm, args.data_dir)
        with FlopCounterMode(display=False) as counter:
            variants["loop"].meta_train_step(batch)
        flops = counter.get_total_flops()
        compile_s = {}
        for label, variant in variants.items():  # warm up; the compiled variant compiles here
            started = time.perf_counter()
            variant.meta_train_step(batch)
            compile_s[label] = time.perf_counter() - started
        times: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(args.rounds):
            for label, variant in variants.items():
                times[label].append(seconds_per_step(lambda v=variant, b=batch: v.meta_train_step(b), args.seconds))
        loop = statistics.median(times["loop"])
        for label, spent in times.items():
            median = statistics.median(spent)
            rows.append({
                "algorithm": algorithm, "meta-batch": batch.num_tasks, "variant": label,
                "s/step": median, "× loop": loop / median, "GFLOP/step": flops / 1e9,
                "GFLOP/s": flops / median / 1e9, "% of matmul peak": 100 * flops / median / 1e9 / peak,
                "first step s": compile_s[label],
            })
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3g"))
    if hasattr(os, "getloadavg"):
        print(f"\nload average after the run: {load_average()} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
