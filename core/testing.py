"""The conformance kit: checks that a suite or a learner keeps the public contract.

Plugin authors call it from their own tests::

    from metazoo.testing import assert_learner_conforms, assert_suite_conforms

    def test_my_suite():
        assert_suite_conforms(MySuite(shots=1))

    def test_my_learner():
        assert_learner_conforms(MyLearner, suite=Sinusoid())

``zoo check [NAME...]`` runs the same checks on installed algorithms and suites. Every check
returns its failures as :class:`Failure` (check name and what was wrong); the ``assert_*``
functions raise one ``AssertionError`` listing them all.

A suite that plays its tasks (:meth:`metazoo.TaskSuite.task_loss`: reinforcement learning) is
checked for that contract instead of for a model that fits its targets: its loss is a finite
scalar differentiable in the model's parameters, its loss and predictions are deterministic
functions of the task tensors, and ``vmap`` over tasks equals a loop over them. A suite that
offers labelled batches (:meth:`metazoo.TaskSuite.sample_labelled`) is checked
for them too; a learner with ``trains_on = "labelled"`` is trained on labelled batches of its
suite, such as those of :class:`GaussianClasses`, the kit's own data-free suite that offers
them (``zoo check`` uses it for such learners).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from metazoo.errors import ZooError
from metazoo.models import MLP
from metazoo.tasks import (
    METRICS,
    SPLITS,
    LabelledBatch,
    TaskBatch,
    TaskSuite,
    draw_distinct,
    offers_labelled_batches,
    plays_tasks,
    split_stream,
    task_metrics,
    trains_on,
)
from torch.func import functional_call


@dataclass(frozen=True)
class Failure:
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


def _sample(suite: TaskSuite, split: str, tasks: int, seed: int) -> TaskBatch:
    return suite.sample(split, tasks, torch.Generator().manual_seed(seed))


def _same(a: TaskBatch | LabelledBatch, b: TaskBatch | LabelledBatch) -> bool:
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))


def _training_batch(learner: Any, suite: TaskSuite, size: int, seed: int) -> TaskBatch | LabelledBatch:
    """What the harness would train ``learner`` on: ``size`` tasks, or labelled examples."""
    if trains_on(learner) == "labelled":
        return suite.sample_labelled("train", size, torch.Generator().manual_seed(seed))
    return _sample(suite, "train", size, seed)


class GaussianClasses(TaskSuite):
    """A data-free classification suite with a fixed set of classes per split, which offers
    labelled batches: class ``c`` of a split is a Gaussian blob in R^``dim`` around a mean drawn
    once from a fixed seed of the split's own (``classes`` per split, splits disjoint). A task
    draws ``ways`` distinct classes of the split and ``shots`` support and ``queries`` query
    points of each; ``sample_labelled`` draws points of uniformly drawn classes. Backbone
    ``MLP(dim, 16, ways)``. For testing learners that train on labelled batches."""

    name, kind = "gaussian-classes", "classification"

    def __init__(self, ways: int = 3, shots: int = 2, queries: int = 3, dim: int = 8, classes: int = 12,
                 noise: float = 0.5) -> None:
        self.ways, self.shots, self.queries, self.dim, self.classes, self.noise = ways, shots, queries, dim, classes, noise

    def means(self, split: str) -> torch.Tensor:
        """``[classes, dim]``: the class means of ``split`` (fixed)."""
        return 2 * torch.randn(self.classes, self.dim, generator=torch.Generator().manual_seed(SPLITS.index(split)))

    def num_classes(self, split):
        return self.classes

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)
        chosen = draw_distinct(own, num_tasks, self.classes, self.ways)  # [T, N]
        means = self.means(split)

        def points(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.arange(self.ways).repeat_interleave(per_class).expand(num_tasks, -1)  # [T, M]
            order = draw_distinct(own, num_tasks, labels.shape[1], labels.shape[1])
            labels = labels.gather(1, order)
            x = means[chosen.gather(1, labels)]  # [T, M, D]
            return x + self.noise * torch.randn(x.shape, generator=own), labels

        return TaskBatch(*points(self.shots), *points(self.queries))

    def sample_labelled(self, split, batch_size, generator):
        own = split_stream(generator, split)
        labels = torch.randint(self.classes, (batch_size,), generator=own)
        x = self.means(split)[labels]
        return LabelledBatch(x + self.noise * torch.randn(x.shape, generator=own), labels)

    def make_model(self):
        return MLP(self.dim, 16, self.ways)


# -- suites ---------------------------------------------------------------------------------------


def _apply(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model with ``params``, as the engine hands it to a played suite's hooks."""
    return lambda inputs: functional_call(model, params, (inputs,))


def check_suite(suite: TaskSuite, tasks: int = 3) -> list[Failure]:
    """Every suite check on ``suite`` (an instance): determinism and independence of the global
    RNG, shapes and dtypes, labels, distinct splits, a default model that fits the data (or, for
    a suite that plays its tasks, the played-task contract)."""
    failures: list[Failure] = []

    def check(name: str, test: Callable[[], str | None]) -> None:
        try:
            problem = test()
        except Exception as exc:  # noqa: BLE001 - a check that raises has failed
            problem = f"raised {type(exc).__name__}: {exc}"
        if problem:
            failures.append(Failure(name, problem))

    def deterministic() -> str | None:
        torch.manual_seed(1)
        first = _sample(suite, "train", tasks, 7)
        torch.manual_seed(2)  # a different global RNG state must not matter
        again = _sample(suite, "train", tasks, 7)
        if not _same(first, again):
            return "the same generator state gave other tasks (does sample use the global RNG?)"
        return None

    def shapes() -> str | None:
        batch = _sample(suite, "train", tasks, 0)
        if not isinstance(batch, TaskBatch):
            return f"sample returned {type(batch).__name__}, not a TaskBatch"
        if batch.num_tasks != tasks:
            return f"asked for {tasks} tasks, got {batch.num_tasks}"
        if not (batch.support_x.is_floating_point() and batch.query_x.is_floating_point()):
            return "support_x and query_x must be floating point"
        if suite.kind == "classification":
            for name, labels in (("support_y", batch.support_y), ("query_y", batch.query_y)):
                if labels.dtype != torch.int64 or labels.dim() != 2:
                    return f"{name} must be int64 [T, examples], got {labels.dtype} {list(labels.shape)}"
        elif suite.kind not in METRICS:
            return f"kind must be one of {', '.join(map(repr, METRICS))}, got {suite.kind!r}"
        return None

    def labels() -> str | None:
        if suite.kind != "classification":
            return None
        batch = _sample(suite, "train", tasks, 0)
        for t in range(batch.num_tasks):
            n_way = int(batch.support_y[t].max()) + 1
            if set(batch.support_y[t].tolist()) != set(range(n_way)):
                return f"task {t}: support labels {sorted(set(batch.support_y[t].tolist()))} are not 0..n_way-1"
            if not set(batch.query_y[t].tolist()) <= set(range(n_way)):
                return f"task {t}: query labels outside 0..{n_way - 1}"
        return None

    def splits_differ() -> str | None:
        drawn = {split: _sample(suite, split, tasks, 0) for split in SPLITS}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if _same(drawn[a], drawn[b]):
                return f"splits {a} and {b} gave identical tasks from the same generator state"
        return None

    def model_fits() -> str | None:
        batch = _sample(suite, "train", tasks, 0)
        out = suite.make_model()(batch.support_x[0])
        if suite.kind == "classification":
            n_way = int(batch.support_y.max()) + 1
            expected = (batch.support_x.shape[1], n_way)
        else:
            expected = tuple(batch.support_y[0].shape)
        if tuple(out.shape) != expected:
            return f"make_model() maps one task's support set to {list(out.shape)}, expected {list(expected)}"
        return None

    def played(dtype: torch.dtype = torch.float32):
        """(model, parameters, batch): the suite's model and a batch of tasks, in ``dtype``."""
        torch.manual_seed(0)
        model = suite.make_model().to(dtype)
        return model, dict(model.named_parameters()), _sample(suite, "train", tasks, 0).to("cpu", dtype)

    def played_loss() -> str | None:
        model, params, batch = played()
        for part, (x, y) in (("support", batch.tensors()[:2]), ("query", batch.tensors()[2:])):
            loss = suite.task_loss(_apply(model, params), x[0], y[0])
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                return f"task_loss of one task's {part} set must be a scalar tensor, got {loss!r}"
            if not torch.isfinite(loss):
                return f"task_loss of one task's {part} set is {loss.item()}"
            if not loss.requires_grad:
                return f"task_loss of one task's {part} set has no gradient in the model's parameters"
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            if all(g is None or not bool(g.any()) for g in grads):
                return f"task_loss of one task's {part} set has no gradient in the model's parameters"
            if not all(g is None or bool(torch.isfinite(g).all()) for g in grads):
                return f"task_loss of one task's {part} set has a non-finite gradient"
        return None

    def played_deterministic() -> str | None:
        model, params, batch = played()
        apply, sx, sy, qx, qy = _apply(model, params), *(t[0] for t in batch.tensors())
        results = []
        for seed in (1, 2):  # a different global RNG state must not matter
            torch.manual_seed(seed)
            results.append((suite.task_loss(apply, sx, sy).detach(), suite.task_prediction(apply, qx, qy).detach()))
        (loss, prediction), (loss2, prediction2) = results
        if not (torch.equal(loss, loss2) and torch.equal(prediction, prediction2)):
            return "the same parameters and task tensors gave another loss or prediction (the global RNG?)"
        if prediction.dim() == 0 or prediction.shape[0] != qx.shape[0] or not bool(torch.isfinite(prediction).all()):
            return (f"task_prediction must give finite values, one row per query ({qx.shape[0]}), "
                    f"got {list(prediction.shape)}")
        return None

    def played_vmap() -> str | None:
        model, params, batch = played(torch.float64)
        apply = _apply(model, params)
        sx, sy, qx, qy = batch.tensors()
        values = {}
        for name, hook, x, y in (("task_loss", suite.task_loss, sx, sy),
                                 ("task_prediction", suite.task_prediction, qx, qy)):
            def task(x, y, hook=hook):
                return hook(apply, x, y)

            mapped, looped = values[name] = torch.vmap(task)(x, y), torch.stack([task(*pair) for pair in zip(x, y)])
            if mapped.shape != looped.shape or not torch.allclose(mapped, looped, rtol=1e-9, atol=1e-12):
                return f"{name}: vmap over the tasks differs from a loop over them (float64)"
        mapped, looped = values["task_loss"]
        if looped.dim() != 1 or not looped.requires_grad:  # not a differentiable scalar: reported above
            return None
        weights = list(params.values())
        for (name, _), a, b in zip(params.items(), torch.autograd.grad(mapped.sum(), weights, allow_unused=True),
                                   torch.autograd.grad(looped.sum(), weights, allow_unused=True)):
            if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-9, atol=1e-12)):
                return f"task_loss: the gradient in {name} under vmap differs from a loop's (float64)"
        return None

    def unknown_split() -> str | None:
        try:
            _sample(suite, "training", tasks, 0)
        except (ValueError, ZooError):
            return None
        return "sample accepted the unknown split 'training' (expected a ValueError)"

    def labelled(split: str, seed: int) -> LabelledBatch:
        return suite.sample_labelled(split, 2 * tasks, torch.Generator().manual_seed(seed))

    def labelled_deterministic() -> str | None:
        torch.manual_seed(1)
        first = labelled("train", 7)
        torch.manual_seed(2)
        if not _same(first, labelled("train", 7)):
            return "the same generator state gave other examples (does sample_labelled use the global RNG?)"
        return None

    def labelled_contract() -> str | None:
        for split in SPLITS:
            classes = suite.num_classes(split)
            if type(classes) is not int or classes < 2:
                return f"num_classes({split!r}) must be an int of at least 2, got {classes!r}"
            batch = labelled(split, 0)
            if not isinstance(batch, LabelledBatch):
                return f"sample_labelled returned {type(batch).__name__}, not a LabelledBatch"
            if len(batch) != 2 * tasks or not batch.x.is_floating_point():
                return f"asked for {2 * tasks} examples of {split}, got x {batch.x.dtype} {list(batch.x.shape)}"
            example = _sample(suite, split, 1, 0).support_x.shape[2:]
            if batch.x.shape[1:] != example:
                return f"{split}: examples of shape {list(batch.x.shape[1:])}, but the tasks' are {list(example)}"
            if batch.y.dtype != torch.int64 or not bool(((batch.y >= 0) & (batch.y < classes)).all()):
                return f"{split}: labels must be int64 in 0..{classes - 1}, got {batch.y.dtype} {batch.y.tolist()}"
        return None

    def labelled_unknown_split() -> str | None:
        try:
            labelled("training", 0)
        except (ValueError, ZooError):
            return None
        return "sample_labelled accepted the unknown split 'training' (expected a ValueError)"

    checks = [("sample is deterministic and ignores the global RNG", deterministic),
              ("shapes and dtypes follow the contract", shapes), ("labels are 0..n_way-1", labels),
              ("splits differ", splits_differ)]
    if plays_tasks(suite):
        checks += [("task_loss is a finite scalar differentiable in the parameters", played_loss),
                   ("task_loss and task_prediction are deterministic", played_deterministic),
                   ("task_loss and task_prediction under vmap equal a loop", played_vmap)]
    else:
        checks += [("make_model fits the data", model_fits)]
    checks += [("an unknown split is refused", unknown_split)]
    if offers_labelled_batches(suite):
        checks += [("sample_labelled is deterministic and ignores the global RNG", labelled_deterministic),
                   ("labelled batches follow the contract", labelled_contract),
                   ("sample_labelled refuses an unknown split", labelled_unknown_split)]
    for name, test in checks:
        check(name, test)
    return failures


# -- learners ---------------------------------------------------------------------------------------


def check_learner(factory: Callable[..., Any], suite: TaskSuite, hyperparameters: dict[str, Any] | None = None,
                  steps: int = 30) -> list[Failure]:
    """Every learner check of ``factory(model, suite, **hyperparameters)`` on ``suite``; a learner
    with ``trains_on = "labelled"`` is trained on labelled batches of ``suite``."""
    hyperparameters = {"meta_batch": 2, **(hyperparameters or {})}
    failures: list[Failure] = []

    def build(seed: int = 0):
        torch.manual_seed(seed)
        return factory(suite.make_model(), suite, **hyperparameters)

    def fail(name: str, message: str) -> None:
        failures.append(Failure(name, message))

    try:
        learner = build()
        batch = _training_batch(learner, suite, hyperparameters["meta_batch"], 0)
    except Exception as exc:  # noqa: BLE001
        return [Failure("builds from factory(model, suite, **hyperparameters)", f"{type(exc).__name__}: {exc}")]
    try:
        factory(suite.make_model(), suite, **hyperparameters, not_a_setting=1)
        fail("an unknown hyperparameter is refused", "factory accepted not_a_setting=1")
    except (ZooError, TypeError) as exc:
        if "not_a_setting" not in str(exc):
            fail("an unknown hyperparameter is refused", f"the error does not name it: {exc}")
    try:
        stats = learner.meta_train_step(batch)
        if not isinstance(stats, dict) or not math.isfinite(float(stats.get("loss", math.nan))):
            fail("meta_train_step returns a finite loss", f"returned {stats!r}")
    except Exception as exc:  # noqa: BLE001
        fail("meta_train_step returns a finite loss", f"raised {type(exc).__name__}: {exc}")
    query = _sample(suite, "test", 2, 1)
    try:
        prediction = learner.predict(query)
        n_way = int(query.support_y.max()) + 1
        if plays_tasks(suite):  # what the suite's hook gives for one task's queries, per task
            model = suite.make_model()
            one = suite.task_prediction(_apply(model, dict(model.named_parameters())), query.query_x[0], query.query_y[0])
            expected = (query.num_tasks, *one.shape)
        elif suite.kind == "classification":
            expected = (*query.query_y.shape, n_way)
        else:
            expected = tuple(query.query_y.shape)
        if tuple(prediction.shape) != expected:
            fail("predict returns the documented shape", f"{list(prediction.shape)}, expected {list(expected)}")
        if prediction.requires_grad:
            fail("predict builds no graph", "its output requires grad")
        twin = build(seed=1)
        twin.load_state_dict(learner.state_dict())
        if not torch.equal(twin.predict(query), learner.predict(query)):
            fail("state_dict round-trips", "a learner loaded with the state predicts otherwise")
    except Exception as exc:  # noqa: BLE001
        fail("predict and state_dict", f"raised {type(exc).__name__}: {exc}")
    if plays_tasks(suite) and trains_on(learner) == "tasks":
        # A policy-gradient surrogate is about 0 at the policy that played its episodes, whatever
        # that policy is worth: the score of the training tasks must improve instead.
        name = f"a short training improves the {suite.metric} on its tasks"
        try:
            trained = build()
            before = task_metrics(suite.kind, trained.predict(batch), batch.query_y).mean().item()
            for _ in range(steps):
                trained.meta_train_step(batch)
            after = task_metrics(suite.kind, trained.predict(batch), batch.query_y).mean().item()
            if not (after > before if suite.higher_is_better else after < before):
                fail(name, f"{suite.metric} {before:.4g} → {after:.4g} in {steps} steps")
        except Exception as exc:  # noqa: BLE001
            fail(name, f"raised {type(exc).__name__}: {exc}")
    else:
        try:
            trained = build()
            losses = [trained.meta_train_step(batch)["loss"] for _ in range(steps)]
            if not sum(losses[-5:]) < sum(losses[:5]):
                fail("a short training lowers the loss", f"loss {losses[0]:.4g} → {losses[-1]:.4g} in {steps} steps")
        except Exception as exc:  # noqa: BLE001
            fail("a short training lowers the loss", f"raised {type(exc).__name__}: {exc}")
    failures += _vectorised_equals_loop(build, batch)
    return failures


def _vectorised_equals_loop(build, batch: TaskBatch) -> list[Failure]:
    from metazoo.model_algorithm import ModelAlgorithmLearner

    name = "the vectorised path equals the per-task loop"
    results = []
    for execution in ("vmap", "loop"):
        learner = build()
        if not isinstance(learner, ModelAlgorithmLearner):
            return []
        learner.config = dataclasses.replace(learner.config, execution=execution)
        try:
            results.append(learner.chunk_meta_gradient(batch))
        except Exception as exc:  # noqa: BLE001
            return [Failure(name, f"{execution} raised {type(exc).__name__}: {exc}")]
    (grads_v, loss_v), (grads_l, loss_l) = results
    if not torch.allclose(loss_v, loss_l, rtol=1e-4, atol=1e-6):
        return [Failure(name, f"losses differ: vmap {loss_v.item():.6g}, loop {loss_l.item():.6g}")]
    for i, (a, b) in enumerate(zip(grads_v, grads_l)):
        if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-4, atol=1e-6)):
            return [Failure(name, f"meta-gradients of parameter {i} differ")]
    return []


def assert_suite_conforms(suite: TaskSuite, **options: Any) -> None:
    """Raise an ``AssertionError`` listing every check ``suite`` fails."""
    _raise(check_suite(suite, **options), f"suite {getattr(suite, 'name', type(suite).__name__)}")


def assert_learner_conforms(factory: Callable[..., Any], suite: TaskSuite,
                            hyperparameters: dict[str, Any] | None = None, **options: Any) -> None:
    """Raise an ``AssertionError`` listing every check ``factory``'s learner fails on ``suite``."""
    _raise(check_learner(factory, suite, hyperparameters, **options), f"learner {getattr(factory, '__name__', factory)}")


def _raise(failures: list[Failure], what: str) -> None:
    if failures:
        raise AssertionError(f"{what} fails {len(failures)} check(s):\n" + "\n".join(f"- {f}" for f in failures))
