"""Speed benchmark: meta-iterations per second of second-order MAML, the core's engine (eager,
forced per-task loop, and the compiled outer step) against a plain per-task reference loop.

Cases (``--case``; default ``sinusoid``, which needs no data files; ``all`` runs every one):

- ``sinusoid``: MLP 1-40-40-1, K=10 support and 10 query points per task, 1 inner step at
  α=0.01, meta-batches of 25 and 100. The engine runs with ``execution="auto"`` (``vmap`` here),
  with ``execution="loop"`` forced, and compiled (``compile=True``: the whole outer step is one
  ``torch.compile``d function; its first step, compilation included, is reported as ``compile s``).
- ``sinusoid-fo``: the same with first-order MAML (the loop drops ``create_graph``).
- ``mlp256``: second-order MAML on a wider MLP 1-256-256-1, meta-batch 25.
- ``omniglot``: 5-way 1-shot on the real Omniglot images, conv4 from the suite's
  ``make_model()``, 15 queries per class, 1 inner step at α=0.4, meta-batch 32. Two engine
  variants: ``execution="auto"`` (resolved per device by the rule in ``metazoo.engine``: ``loop``
  on CPU, ``vmap`` on CUDA), ``execution="vmap"`` forced, and compiled. The Omniglot zips are taken from
  ``--data-dir``, else ``$METAZOO_DATA``, else ``../shared/data/omniglot`` beside the repository.

Every path does the same work per meta-iteration: from one pre-sampled float32 meta-batch, the
second-order meta-gradient of the mean query loss, one outer step of the same Adam optimiser
(unless ``--gradient-only``), and the loss as a Python float. Before timing, every engine variant
is checked to give the reference's meta-gradient and loss from the same weights (the compiled one:
the reference's parameters after one Adam step; sinusoid: on the timed batch in float32; omniglot:
on 4 tasks in float64, with TF32 off on CUDA). The paths
alternate in short rounds, so that load from other processes hits them alike; the table gives
median it/s and the median of the per-round ratios to the loop, with their range.

    python -m metazoo.benchmarks.speed [--case sinusoid|omniglot|all] [--device cpu]
        [--batches 25,100] [--seconds 1.5] [--rounds 5] [--threads N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from metazoo import Zoo, get_plugin_manager
from metazoo.data import find_omniglot
from metazoo.errors import ZooError
from metazoo.models import MLP
from metazoo.tasks import TaskBatch
from tabulate import tabulate
from torch.func import functional_call

OUTER_LR = 1e-3
SHARED_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: suite, protocol, inner loop, engine variants and checks."""

    name: str
    description: str  # the table's caption, before the per-run details
    suite: str
    protocol: dict
    inner_lr: float
    batches: tuple[int, ...]  # default meta-batch sizes
    engines: dict[str, dict]  # column label -> the learner's ``execution`` and ``compile`` settings
    warmup: int  # untimed steps per path before the rounds (allocator, optimiser state)
    first_order: bool = False
    hidden: int | None = None  # an MLP 1-h-h-1 instead of the suite's backbone
    check_dtype: torch.dtype = torch.float32
    check_tasks: int | None = None  # tasks in the correctness check (None: the timed meta-batch)
    loss_rtol: float = 1e-5
    grad_tol: dict = field(default_factory=lambda: {"rtol": 1e-4, "atol": 1e-6})


# eager vmap, the forced per-task loop, and the compiled step
MLP_ENGINES = {"engine": {"execution": "auto"}, "loop engine": {"execution": "loop"},
               "compiled": {"execution": "auto", "compile": True}}

CASES = {
    case.name: case
    for case in (
        Case(
            name="sinusoid",
            description="second-order MAML, sinusoid, MLP 1-40-40-1, K=10, {queries} queries, "
            "1 inner step, α=0.01",
            suite="sinusoid",
            protocol={"shots": 10, "queries": 10},
            inner_lr=0.01,
            batches=(25, 100),
            engines=MLP_ENGINES,
            warmup=3,
        ),
        Case(
            name="sinusoid-fo",
            description="first-order MAML, sinusoid, MLP 1-40-40-1, K=10, {queries} queries, "
            "1 inner step, α=0.01",
            suite="sinusoid",
            protocol={"shots": 10, "queries": 10},
            inner_lr=0.01,
            batches=(25, 100),
            engines=MLP_ENGINES,
            warmup=3,
            first_order=True,
        ),
        Case(
            name="mlp256",
            description="second-order MAML, sinusoid, MLP 1-256-256-1, K=10, {queries} queries, "
            "1 inner step, α=0.01",
            suite="sinusoid",
            protocol={"shots": 10, "queries": 10},
            inner_lr=0.01,
            batches=(25,),
            engines=MLP_ENGINES,
            warmup=3,
            hidden=256,
            grad_tol={"rtol": 1e-3, "atol": 1e-5},
        ),
        Case(
            name="omniglot",
            description="second-order MAML, Omniglot 5-way 1-shot, conv4 (64 filters, "
            "batch-statistics norm, max-pooling), {queries} queries per class, 1 inner step, α=0.4",
            suite="omniglot",
            protocol={"ways": 5, "shots": 1, "queries": 15},
            inner_lr=0.4,
            batches=(32,),
            engines={"auto": {"execution": "auto"}, "vmap": {"execution": "vmap"},
                     "compiled": {"execution": "auto", "compile": True}},
            warmup=1,  # an iteration takes seconds on a CPU
            # In float32 the engine and the loop differ by up to 1e-5 relative (and wholly on the
            # conv biases, whose exact gradient is 0 under batch norm); in float64 by < 1e-13.
            check_dtype=torch.float64,
            check_tasks=4,
            loss_rtol=1e-10,
            grad_tol={"rtol": 1e-7, "atol": 1e-10},
        ),
    )
}


class ReferenceLoop:
    """Second-order MAML written the plain way: one task at a time, summed, one backward."""

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, inner_lr: float, kind: str,
        first_order: bool = False,
    ) -> None:
        self.model = model
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.loss_fn = F.cross_entropy if kind == "classification" else F.mse_loss
        # The engine's optimiser class and settings, so that the outer steps cost the same.
        self.optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Write the mean meta-gradient into ``p.grad``; return the mean query loss."""
        params = dict(self.model.named_parameters())
        total = 0.0
        for sx, sy, qx, qy in zip(*batch.tensors()):
            support = self.loss_fn(functional_call(self.model, params, (sx,)), sy)
            grads = torch.autograd.grad(support, list(params.values()), create_graph=not self.first_order)
            fast = {name: p - self.inner_lr * g for (name, p), g in zip(params.items(), grads)}
            total = total + self.loss_fn(functional_call(self.model, fast, (qx,)), qy)
        loss = total / batch.num_tasks
        loss.backward()
        return loss.item()

    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        loss = self.meta_gradient(batch)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}


def build(case: Case, num_tasks: int, device: torch.device, dtype: torch.dtype,
          protocol: dict, seed: int = 0):
    """The ``maml`` learner from the registry once per engine variant, a reference loop, all on
    copies of the same initial weights, and one pre-sampled meta-batch on ``device``."""
    zoo = Zoo(get_plugin_manager(autoload=False))  # the built-in plugins only
    suite = zoo.suites.get(case.suite).factory(**protocol)
    torch.manual_seed(seed)
    model = MLP(1, case.hidden, case.hidden, 1) if case.hidden else suite.make_model()
    learners = {
        label: zoo.algorithms.get("maml").factory(
            copy.deepcopy(model), suite, meta_batch=num_tasks, inner_steps=1,
            inner_lr=case.inner_lr, outer_lr=OUTER_LR, outer_optimizer="adam",
            first_order=case.first_order, **settings,
        ).to(device, dtype)
        for label, settings in case.engines.items()
    }
    optimizer = next(iter(learners.values())).optimizer
    reference = ReferenceLoop(model.to(device, dtype), optimizer, case.inner_lr, suite.kind, case.first_order)
    batch = suite.sample("train", num_tasks, torch.Generator().manual_seed(seed))
    return learners, reference, batch.to(device, dtype)


@contextlib.contextmanager
def tf32_off(device: torch.device) -> Iterator[None]:
    """Exact float32 on CUDA: TF32 alone puts float32 comparisons off by 1e-2 after a
    second-order step. Restores the previous settings (no-op off CUDA)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_same_meta_gradient(case: Case, num_tasks: int, device: torch.device,
                             protocol: dict) -> dict[str, float]:
    """Assert that every eager engine variant computes the reference's meta-gradient and loss,
    and that the compiled one makes the reference's Adam step, on fresh copies of the same
    weights (``case.check_tasks`` tasks in ``case.check_dtype``). Returns the compiled
    variants' first-step times (compilation included)."""
    compile_s = {}
    tasks = min(case.check_tasks or num_tasks, num_tasks)
    learners, reference, batch = build(case, tasks, device, case.check_dtype, protocol)
    with tf32_off(device):
        expected = reference.meta_gradient(batch)
        for label, learner in learners.items():
            if learner.compiles:
                continue
            loss = learner.meta_gradient(batch)
            if abs(loss - expected) > case.loss_rtol * abs(expected):
                raise AssertionError(f"{label}: losses differ: engine {loss}, reference {expected}")
            named = zip(learner.model.named_parameters(), reference.model.parameters())
            for (name, p), q in named:
                if not torch.allclose(p.grad, q.grad, **case.grad_tol):
                    raise AssertionError(f"{label}: meta-gradients differ on {name}: "
                                         f"max |Δ| = {(p.grad - q.grad).abs().max().item():.3g}")
        reference.optimizer.step()
        for label, learner in learners.items():
            if not learner.compiles:
                continue
            stats = learner.meta_train_step(batch)
            loss, compile_s[label] = stats["loss"], stats.get("compile_s", float("nan"))
            if abs(loss - expected) > case.loss_rtol * abs(expected):
                raise AssertionError(f"{label}: losses differ: compiled {loss}, reference {expected}")
            for (name, p), q in zip(learner.model.named_parameters(), reference.model.parameters()):
                if not torch.allclose(p, q, **case.grad_tol):
                    raise AssertionError(f"{label}: parameters after a step differ on {name}: "
                                         f"max |Δ| = {(p - q).abs().max().item():.3g}")
    return compile_s


def iterations_per_second(step: Callable[[], object], seconds: float, device: torch.device) -> float:
    """Run ``step`` for about ``seconds`` (at least once) and return iterations per second."""
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


def make_step(path, batch: TaskBatch, gradient_only: bool) -> Callable[[], object]:
    """One timed iteration of a learner or the reference loop (both have ``meta_gradient``,
    ``meta_train_step`` and ``optimizer``)."""
    if not gradient_only:
        return lambda: path.meta_train_step(batch)

    def step() -> float:
        loss = path.meta_gradient(batch)
        path.optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def measure(case: Case, num_tasks: int, device: torch.device, seconds: float, rounds: int,
            protocol: dict, gradient_only: bool = False) -> dict:
    """Median it/s of each engine variant and the loop over ``rounds`` interleaved rounds, and
    the median (and range) of each variant's per-round ratios to the loop."""
    compile_s = check_same_meta_gradient(case, num_tasks, device, protocol)
    learners, reference, batch = build(case, num_tasks, device, torch.float32, protocol)
    if gradient_only:  # the compiled step always includes the update
        learners = {label: learner for label, learner in learners.items() if not learner.compiles}
    steps = {label: make_step(learner, batch, gradient_only) for label, learner in learners.items()}
    steps["loop"] = make_step(reference, batch, gradient_only)
    for step in steps.values():
        for _ in range(case.warmup):  # a compiled variant compiles again here if the check's dtype differs
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            times[label].append(iterations_per_second(step, seconds, device))
    row: dict = {"meta-batch": num_tasks, "loop it/s": statistics.median(times["loop"])}
    for label in learners:
        row[f"{label} it/s"] = statistics.median(times[label])
    for label in learners:
        ratios = [e / r for e, r in zip(times[label], times["loop"])]
        row[f"{label}/loop"] = statistics.median(ratios)
        row[f"{label}/loop range"] = f"{min(ratios):.2f}–{max(ratios):.2f}"
    for label, learner in learners.items():
        if learner.compiles:
            row[f"{label} compile s"] = compile_s[label]  # in the check, dtype case.check_dtype
        elif case.engines[label]["execution"] == "auto":
            row[f"{label} runs"] = learner.execution  # what "auto" resolved to
    return row


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


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
        rows.append(("load average", f"{load_average()} (1, 5, 15 min)"))
    if device.type == "cuda":
        rows.append(("GPU", torch.cuda.get_device_name(device)))
        rows.append(("TF32 (timing)", f"cudnn {torch.backends.cudnn.allow_tf32}, "
                                      f"matmul {torch.backends.cuda.matmul.allow_tf32}"))
    return rows


def omniglot_data_dir(given: str | None) -> str | None:
    """``--data-dir``; else ``None`` where ``$METAZOO_DATA`` is set (the suite reads it); else
    the shared copy beside the repository."""
    if given:
        return given
    return None if os.environ.get("METAZOO_DATA") else str(SHARED_OMNIGLOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="sinusoid", choices=[*CASES, "all"],
                        help="which benchmark (default: sinusoid)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batches", help="meta-batch sizes, e.g. 25,100 (default: 25,100 for "
                        "sinusoid, 32 for omniglot)")
    parser.add_argument("--queries", type=int, help="query examples per task (sinusoid, default "
                        "10) or per class (omniglot, default 15); smaller only for smoke tests")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per timed round "
                        "(each path runs at least one iteration per round)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for this process")
    parser.add_argument("--gradient-only", action="store_true",
                        help="time the meta-gradient without the outer optimiser step")
    parser.add_argument("--data-dir", help="folder of the Omniglot zips (default: $METAZOO_DATA, "
                        f"else {SHARED_OMNIGLOT})")
    parser.add_argument("--format", default="github", help="tabulate table format")
    args = parser.parse_args(argv)

    try:
        batches = [int(b) for b in args.batches.split(",")] if args.batches else None
        device = torch.device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    numbers = [*(batches or []), args.seconds, args.rounds]
    numbers += [n for n in (args.threads, args.queries) if n is not None]
    if min(numbers) <= 0:
        parser.error("--batches, --seconds, --rounds, --threads and --queries must be positive")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    cases = list(CASES.values()) if args.case == "all" else [CASES[args.case]]
    protocols = {}
    for case in cases:
        protocols[case.name] = dict(case.protocol)
        if args.queries is not None:
            protocols[case.name]["queries"] = args.queries
    if "omniglot" in protocols:  # fail before any timing if the data are missing
        data_dir = omniglot_data_dir(args.data_dir)
        try:
            find_omniglot(data_dir)
        except ZooError as exc:
            print(f"speed: the omniglot case reads the Omniglot zips from --data-dir, else "
                  f"$METAZOO_DATA, else {SHARED_OMNIGLOT}. {exc}", file=sys.stderr)
            return 2
        protocols["omniglot"]["data_dir"] = data_dir
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(tabulate(describe(device), tablefmt="plain"))
    work = "meta-gradient only" if args.gradient_only else "meta-gradient + Adam step"
    for case in cases:
        protocol, sizes = protocols[case.name], batches or case.batches
        check = f"{min(case.check_tasks, *sizes)} tasks" if case.check_tasks else "the timed batch"
        print(f"\n{case.description.format(queries=protocol['queries'])}; float32; {work} per "
              f"iteration; median of {args.rounds} interleaved rounds of {args.seconds:g} s; "
              f"checked against the loop on {check} in {str(case.check_dtype).split('.')[-1]}\n")
        rows = [measure(case, b, device, args.seconds, args.rounds, protocol, args.gradient_only)
                for b in sizes]
        print(tabulate(rows, headers="keys", tablefmt=args.format, floatfmt=".2f"))
    if hasattr(os, "getloadavg"):
        print(f"\nload average after the run: {load_average()} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
