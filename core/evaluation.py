"""Fixed task lists and per-task metrics: what every run of a benchmark is validated and tested on.

Task ``i`` of a split is drawn by the suite from a generator of its own, seeded by
:func:`task_seed` of (split, seed, i). A task list is therefore a pure function of the suite's
protocol, the split, the evaluation seed and the task index: batching (``batch_tasks``) does not
change it, and the stream a run meta-trains on (split ``"train"``, seeded by the training seed and
the step) no longer meets the val or test tasks when the training seed equals the evaluation
seed, because the split is part of every seed. Caveat: torch's CPU generator keeps only the low
32 bits of a seed, so two of these seeds coincide with probability 2⁻³² per pair; none does for
the published runs (a test checks it), and the next version of the derivation (``TASK_SAMPLING``
3, due with the next regeneration of the published tables) puts the split in the low bits. Each list has a digest of its tensors, stored with each run's record, so that
the leaderboard pairs only runs tested on the same tasks.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Iterator

import torch
from metazoo.tasks import LabelledBatch, TaskBatch, TaskSuite, task_metrics

#: Bumped whenever the derivation of task lists changes; part of every benchmark's protocol hash.
TASK_SAMPLING = 2


def task_seed(split: str, seed: int, index: int) -> int:
    """A 63-bit generator seed for item ``index`` (a task, or a training step) of ``split``."""
    digest = hashlib.sha256(f"metazoo:{split}:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def task_generator(split: str, seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(task_seed(split, seed, index))


def train_batch(suite: TaskSuite, seed: int, step: int, meta_batch: int,
                labelled: bool = False) -> TaskBatch | LabelledBatch:
    """The meta-batch of training step ``step`` (counted from 0) of a run with ``seed``: tasks,
    or with ``labelled`` a :class:`~metazoo.tasks.LabelledBatch` of ``meta_batch`` examples
    (for learners with ``trains_on = "labelled"``), from the same generator."""
    generator = task_generator("train", seed, step)
    if labelled:
        return suite.sample_labelled("train", meta_batch, generator)
    return suite.sample("train", meta_batch, generator)


class TaskList:
    """The fixed tasks ``0..count-1`` of ``split`` under ``seed``, served in batches of at most
    ``batch_tasks`` (a memory bound: the tasks are the same for any value)."""

    def __init__(self, suite: TaskSuite, split: str, count: int, seed: int, batch_tasks: int) -> None:
        self.suite, self.split, self.count, self.seed, self.batch_tasks = suite, split, count, seed, batch_tasks
        self._hashes = [hashlib.sha256() for _ in range(4)]  # support_x, support_y, query_x, query_y
        self._hashed = 0

    def __iter__(self) -> Iterator[TaskBatch]:
        for start in range(0, self.count, self.batch_tasks):
            stop = min(start + self.batch_tasks, self.count)
            batch = TaskBatch.cat([
                self.suite.sample(self.split, 1, task_generator(self.split, self.seed, index))
                for index in range(start, stop)
            ])
            if self._hashed == start:  # the first pass over the list feeds the digest
                for digest, tensor in zip(self._hashes, batch.tensors()):
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
                self._hashed = stop
            yield batch

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the list's tensors, task by task; iterates the list
        first if that has not happened yet."""
        if self._hashed < self.count:
            for _ in self:
                pass
        return hashlib.sha256("".join(h.hexdigest() for h in self._hashes).encode()).hexdigest()[:16]


def evaluate(learner, suite: TaskSuite, batches, device: torch.device, steps: int | None = None) -> torch.Tensor:
    """Per-task metric ``[n]`` of ``learner`` over an iterable of task batches; with ``steps``,
    adapted by that many inner steps (``learner.predict(batch, steps=steps)``, see
    :func:`adapts_by_steps`)."""
    values = []
    for batch in batches:
        batch = batch.to(device)
        predictions = learner.predict(batch) if steps is None else learner.predict(batch, steps=steps)
        values.append(task_metrics(suite.kind, predictions, batch.query_y).cpu())
    return torch.cat(values)


def adapts_by_steps(learner) -> bool:
    """Whether ``learner.predict`` takes a number of inner steps (``steps=k``), as every
    :class:`~metazoo.model_algorithm.ModelAlgorithmLearner` does: what ``adaptation_steps``
    needs. Model-data learners have no inner loop."""
    return "steps" in inspect.signature(learner.predict).parameters


def by_adaptation_steps(learner, suite: TaskSuite, tasks, device: torch.device,
                        steps: tuple[int, ...]) -> dict[str, list[float]]:
    """Per-task metrics of ``tasks`` after each number of inner steps in ``steps``, keyed by the
    number as a string (a JSON object's key)."""
    return {str(k): evaluate(learner, suite, tasks, device, steps=k).tolist() for k in steps}


def summary(values: torch.Tensor) -> dict[str, float]:
    """Mean and the 95% confidence half-width 1.96·s.d./√n (normal approximation) over tasks."""
    n = values.numel()
    std = values.double().std().item() if n > 1 else 0.0
    return {"mean": values.double().mean().item(), "ci95": 1.96 * std / math.sqrt(n), "n": n}
