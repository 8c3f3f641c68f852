"""The conformance kit: every built-in algorithm, the Omniglot suite and the example package
pass it; a deliberately broken suite or learner fails exactly the check it breaks."""

from __future__ import annotations

from pathlib import Path

import metazoo
import pytest
import torch
from metazoo.model_algorithm import ModelAlgorithmLearner
from metazoo.models import MLP
from metazoo.tasks import SPLITS, TaskBatch, TaskSuite, split_stream
from metazoo.testing import (
    assert_learner_conforms,
    assert_suite_conforms,
    check_learner,
    check_suite,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


class Blobs(TaskSuite):
    """A conforming toy: 2-way tasks of two Gaussian blobs in R^3, a stream per split."""

    name, kind = "blobs", "classification"

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)
        centres = torch.randn(num_tasks, 2, 1, 3, generator=own)  # [T, N, 1, D]
        labels = torch.arange(2).repeat_interleave(4).expand(num_tasks, -1)  # [T, 8]
        x = centres.expand(-1, -1, 4, -1).reshape(num_tasks, 8, 3) + 0.1 * torch.randn(num_tasks, 8, 3, generator=own)
        return TaskBatch(x[:, ::2], labels[:, ::2], x[:, 1::2], labels[:, 1::2])

    def make_model(self):
        return MLP(3, 8, 2)


class GlobalRandom(Blobs):
    def sample(self, split, num_tasks, generator):
        return super().sample(split, num_tasks, torch.Generator().manual_seed(int(torch.randint(9, ()))))


class OneBasedLabels(Blobs):
    def sample(self, split, num_tasks, generator):
        b = super().sample(split, num_tasks, generator)
        return TaskBatch(b.support_x, b.support_y + 1, b.query_x, b.query_y + 1)


class SameSplits(Blobs):
    def sample(self, split, num_tasks, generator):
        return super().sample("train", num_tasks, generator)


class WrongModel(Blobs):
    def make_model(self):
        return MLP(3, 8, 5)


class AnySplit(Blobs):
    def sample(self, split, num_tasks, generator):
        return super().sample("train" if split not in SPLITS else split, num_tasks, generator)


@pytest.mark.parametrize(("suite", "checks"), [
    (GlobalRandom(), "sample is deterministic and ignores the global RNG"),
    (OneBasedLabels(), ("labels are 0..n_way-1", "make_model fits the data")),  # the model sees 3 ways
    (SameSplits(), ("splits differ", "an unknown split is refused")),
    (WrongModel(), "make_model fits the data"),
    (AnySplit(), "an unknown split is refused"),
])
def test_a_broken_suite_fails_the_check_it_breaks(suite, checks):
    assert_suite_conforms(Blobs())
    assert [f.check for f in check_suite(suite)] == ([checks] if isinstance(checks, str) else list(checks))


class NaNLoss(ModelAlgorithmLearner):
    def meta_train_step(self, batch):
        return {"loss": float("nan")}


class WrongShape(ModelAlgorithmLearner):
    def predict(self, batch):
        return super().predict(batch)[..., :1]


class WithGraph(ModelAlgorithmLearner):
    def predict(self, batch):
        return super().predict(batch) + 0 * next(self.parameters()).sum()


class Forgetful(ModelAlgorithmLearner):
    """Predicts with a random offset drawn at construction, which state_dict does not hold."""

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        self.offset = torch.randn(())

    def predict(self, batch):
        return super().predict(batch) + self.offset


class Idle(ModelAlgorithmLearner):
    """Reports a loss but never changes its parameters."""

    def meta_train_step(self, batch):
        return {"loss": self.meta_gradient(batch)}


class NoisyInVmap(ModelAlgorithmLearner):
    """An inner update whose result depends on the execution (random noise per call)."""

    def inner_update(self, params, grads, step):
        return {n: p - 0.1 * grads[n] * torch.rand(()) for n, p in params.items()}


def _swallowing(model, suite, **hyperparameters):
    hyperparameters.pop("not_a_setting", None)
    return ModelAlgorithmLearner(model, suite, **hyperparameters)


@pytest.mark.parametrize(("factory", "checks"), [
    (NaNLoss, ["meta_train_step returns a finite loss", "a short training lowers the loss"]),
    (WrongShape, ["predict returns the documented shape"]),
    (WithGraph, ["predict builds no graph"]),
    (Forgetful, ["state_dict round-trips"]),
    (Idle, ["a short training lowers the loss"]),
    (NoisyInVmap, ["state_dict round-trips", "the vectorised path equals the per-task loop"]),
    (_swallowing, ["an unknown hyperparameter is refused"]),
])
def test_a_broken_learner_fails_the_check_it_breaks(one_thread, factory, checks):
    assert_learner_conforms(ModelAlgorithmLearner, Blobs(), {"inner_lr": 0.5, "outer_lr": 0.01})
    failures = check_learner(factory, Blobs(), {"inner_lr": 0.5, "outer_lr": 0.01})
    assert [f.check for f in failures if not f.check.startswith("a short")] == \
        [c for c in checks if not c.startswith("a short")], failures
    if "a short training lowers the loss" in checks:
        assert "a short training lowers the loss" in [f.check for f in failures]


def test_zoo_check_passes_every_built_in_algorithm(zoo, host, one_thread):
    names = host.algorithms.names()
    assert len(names) == 16
    code, stdout, stderr = zoo("check", *names)
    assert code == 0, stdout + stderr
    assert stdout.strip().endswith("16 of 16 passed every check")


def test_zoo_check_passes_every_built_in_suite(zoo, one_thread):
    names = ["sinusoid", "hyperplanes"] + (["omniglot", "--data-dir", str(DATA)] if DATA.exists() else [])
    code, stdout, stderr = zoo("check", *names)
    assert code == 0, stdout + stderr
    assert stdout.strip().endswith(f"{3 if DATA.exists() else 2} of {3 if DATA.exists() else 2} passed every check")


def test_zoo_check_names_each_failure_and_exits_1(zoo, monkeypatch):
    plugin = type("Plugin", (), {"zoo_register_suites": staticmethod(metazoo.hookimpl(
        lambda registry: registry.add("onebased", OneBasedLabels)))})
    pm = metazoo.get_plugin_manager(autoload=False)
    pm.register(plugin, name="onebased")
    monkeypatch.setattr("metazoo.cli.get_plugin_manager", lambda blocked=(): pm)
    code, stdout, stderr = zoo("check", "onebased")
    assert code == 1 and "FAIL suite onebased: labels are 0..n_way-1: task 0" in stdout, stdout + stderr
    assert "1 of 1 failed the conformance kit" in stderr


@pytest.mark.skipif(not DATA.exists(), reason=f"Omniglot data not found at {DATA}")
def test_omniglot_conforms():
    from metazoo.plugins.omniglot import Omniglot

    assert_suite_conforms(Omniglot(data_dir=str(DATA), ways=5, shots=1, queries=2))


def test_the_example_package_conforms(toy_plugin, zoo_process):
    checked = zoo_process("check", "signmaml", "lines", sites=(toy_plugin,))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 of 2 passed every check" in checked.stdout
