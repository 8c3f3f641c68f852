"""Tests that guard the numbers every published table is made of, each against an independent
computation: the confidence intervals (leaderboard and run summary), the tested state (the best
validation state, not the last), and the test tasks a run meets (the pinned digests)."""

import math
import types

import metazoo
import numpy as np
import torch
from metazoo.bench import plan, run_bench
from metazoo.benchmark import Benchmark, Evaluation, Training, builtin_benchmarks, load_benchmark
from metazoo.evaluation import summary
from metazoo.executors import InProcess, WorkerContext
from metazoo.leaderboard import summarize
from metazoo.manager import Zoo, get_plugin_manager
from scipy import stats
from test_leaderboard import record
from test_task_lists import PINNED

VALUES = [0.2, 0.9, 0.4, 0.7, 0.55, 0.35, 0.8]


def normal_ci(values) -> float:
    """Half-width of the 95% normal-approximation interval of the mean, by scipy."""
    return stats.norm.ppf(0.975) * stats.sem(values)


def test_the_leaderboards_confidence_interval_is_the_normal_95_percent_interval():
    (row,) = summarize([record("b", "maml", VALUES)]).to_dict("records")
    assert math.isclose(row["ci95"], normal_ci(VALUES), rel_tol=1e-3)  # 1.96 against 1.95996…


def test_the_run_summarys_confidence_interval_is_the_normal_95_percent_interval():
    result = summary(torch.tensor(VALUES, dtype=torch.float64))
    assert math.isclose(result["ci95"], normal_ci(VALUES), rel_tol=1e-3)
    assert math.isclose(result["mean"], np.mean(VALUES)) and result["n"] == len(VALUES)


class Drifting(metazoo.MetaLearner):
    """Predicts the constant ``offset`` for every query, and every step moves it 1 further
    from the targets' mean (0 for sine waves): its validation MSE is best at the first check."""

    family = "model-algorithm"

    def __init__(self, model, suite, **hp):
        super().__init__(model, suite, **hp)
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def meta_train_step(self, batch):
        with torch.no_grad():
            self.offset += 1.0
        return {"loss": float(self.offset.detach())}

    def predict(self, batch):
        return self.offset.detach().expand(batch.query_y.shape).clone()


@metazoo.hookimpl
def _register_drifting(registry):
    registry.add("drifting", Drifting, family="model-algorithm")


def test_the_tested_state_is_the_best_validation_state_not_the_last(tmp_path):
    pm = get_plugin_manager(autoload=False)
    pm.register(types.SimpleNamespace(zoo_register_algorithms=_register_drifting), name="drifting")
    zoo = Zoo(pm)
    spec = Benchmark(name="drift", suite="sinusoid", evaluation=Evaluation(test_tasks=50, val_tasks=20),
                     training=Training(steps=6, val_every=2))
    (result,) = run_bench(plan(zoo, [spec], ["drifting"], [0]), InProcess(zoo, WorkerContext.of(zoo, "cpu")),
                          tmp_path, torch.device("cpu"), log=lambda message: None)
    assert result["status"] == "ok", result.get("error")
    assert result["best_step"] == 2  # validations at steps 2, 4, 6: offsets 2, 4, 6
    suite = zoo.suites.get("sinusoid").factory()
    from metazoo.evaluation import TaskList

    targets = torch.cat([b.query_y for b in TaskList(suite, "test", 50, spec.evaluation.eval_seed, 50)])
    expected = (targets - 2.0).pow(2).flatten(1).mean(1).mean().item()  # the MSE of offset 2, not 6
    assert math.isclose(result["test"]["mean"], expected, rel_tol=1e-5)


def test_a_run_meets_the_pinned_test_tasks_of_its_benchmark(tmp_path):
    """Through the harness (not only the task list): a shifted evaluation seed, or any other
    change to the tasks a run is tested on, changes the digest in its record."""
    spec = load_benchmark(builtin_benchmarks()["sinusoid"])
    spec = type(spec)(**{**spec.__dict__, "training": Training(steps=1)})
    zoo = Zoo()
    (result,) = run_bench(plan(zoo, [spec], ["fomaml"], [0]), InProcess(zoo, WorkerContext.of(zoo, "cpu")),
                          tmp_path, torch.device("cpu"), log=lambda message: None)
    assert result["test"]["tasks_digest"] == PINNED["sinusoid"]
