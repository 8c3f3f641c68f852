"""Meta-reinforcement learning: played tasks (TaskSuite.task_loss / task_prediction), the
navigation2d and bandits suites, and the model-algorithm engine adapting a policy through them.

The rollouts are checked against plain per-episode loops of the reference environments, the
baseline against rllab's least squares, and the engine's vectorised meta-gradient against a
per-task loop of plain autograd on the same rollouts (the same pre-drawn random numbers), in
float64.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from metazoo.evaluation import TaskList
from metazoo.plugins.bandits import Bandits
from metazoo.plugins.halfcheetah import HalfCheetahVel
from metazoo.plugins.navigation2d import Navigation2D
from metazoo.rl import discounted_returns, linear_feature_baseline, policy_gradient_surrogate
from metazoo.tasks import METRICS, TaskBatch, plays_tasks, task_metrics
from metazoo.testing import assert_learner_conforms, assert_suite_conforms, check_suite
from torch.func import functional_call

SMALL_NAVIGATION = {"shots": 3, "queries": 2, "horizon": 12}
SMALL_CHEETAH = {"shots": 8, "queries": 8, "horizon": 6}  # ≥ 8 episodes: vmap and a loop round alike
MUJOCO = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("gymnasium") is None,
                            reason="the halfcheetah suites' optional extra (pip install 'metazoo[mujoco]')")
#: The played suites, small; the engine's checks run on each.
RL_SUITES = [pytest.param(Navigation2D(**SMALL_NAVIGATION), id="navigation2d"),
             pytest.param(Bandits(shots=5, queries=4), id="bandits"),
             pytest.param(HalfCheetahVel(**SMALL_CHEETAH), id="halfcheetah-vel", marks=MUJOCO)]


def double(suite, tasks=3, seed=0):
    """The suite's model and ``tasks`` training tasks, in float64."""
    torch.manual_seed(seed)
    model = suite.make_model().double()
    return model, suite.sample("train", tasks, torch.Generator().manual_seed(seed)).to("cpu", torch.float64)


# -- the environments ---------------------------------------------------------------------------------


def reference_navigation_returns(mean_and_log_std, goal, noise):
    """The reference environment (cbfinn/maml_rl point_env_randgoal.py inside rllab's normalize),
    one episode at a time, one step at a time: the undiscounted return of each episode."""
    returns = []
    for episode_noise in noise:
        state, total = np.zeros(2), 0.0
        for eps in episode_noise:
            mean, log_std = mean_and_log_std(torch.tensor(state))
            action = mean.numpy() + np.exp(max(log_std.numpy()[0], math.log(1e-6))) * eps.numpy()
            state = state + np.clip(0.1 * action, -0.1, 0.1)  # normalize: a ∈ [−1, 1] → [−0.1, 0.1]
            x, y = state - goal.numpy()
            total += -(x**2 + y**2) ** 0.5
            if abs(x) < 0.01 and abs(y) < 0.01:
                break
        returns.append(total)
    return returns


def test_navigation_plays_the_reference_environment_including_arrival():
    suite = Navigation2D(shots=2, queries=2, horizon=30)
    goal = torch.tensor([0.25, -0.15], dtype=torch.float64)

    def homing(obs):  # steer straight at the goal: arrives after 3 steps, and the episode ends
        return torch.cat([10 * (goal - obs), torch.full_like(obs, -20.0)], dim=-1)

    def wandering(obs):  # σ = 1 around a fixed drift: never arrives
        return torch.cat([torch.full_like(obs, 0.3), torch.zeros_like(obs)], dim=-1)

    noise = torch.randn(2, 30, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    goals = goal.expand(2, 2)
    for policy in (homing, wandering):
        got = suite.task_prediction(policy, goals, noise)
        expected = reference_navigation_returns(lambda s, p=policy: p(s).split(2), goal, noise)
        assert got.tolist() == pytest.approx(expected, rel=1e-12)
    _, rewards, _, alive = suite.rollout(homing, goals, noise)
    assert alive[0].tolist() == [1.0] * 3 + [0.0] * 27 and bool((rewards[:, 3:] == 0).all())


def test_navigation_tasks_follow_the_papers_protocol():
    suite = Navigation2D()
    batch = suite.sample("test", 50, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (50, 20, 2) and batch.support_y.shape == (50, 20, 100, 2)
    assert batch.query_x.shape == (50, 20, 2) and batch.query_y.shape == (50, 20, 100, 2)
    goals = batch.support_x[:, 0]
    assert bool((goals.abs() <= 0.5).all()) and bool((batch.support_x == goals.unsqueeze(1)).all())
    assert torch.equal(batch.query_x[:, 0], goals)
    assert not torch.equal(batch.support_y, batch.query_y)  # fresh noise for the query episodes
    model = suite.make_model()  # 2 → 100 → 100 → 2 (ReLU), a learnt log σ that starts at 0
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == {
        "fc0.weight": (100, 2), "fc0.bias": (100,), "fc1.weight": (100, 100), "fc1.bias": (100,),
        "head.log_std": (2,), "head.mean.weight": (2, 100), "head.mean.bias": (2,)}
    assert torch.equal(model.head.log_std, torch.zeros(2)) and not model.fc0.bias.any()
    assert (suite.kind, suite.metric, suite.higher_is_better) == ("reinforcement", "return", True)


def test_bandits_pull_the_gumbel_argmax_arm_and_pay_bernoulli():
    suite = Bandits(arms=4, shots=6, queries=6, horizon=3)
    batch = suite.sample("train", 1, torch.Generator().manual_seed(1))
    p, noise = batch.support_x[0], batch.support_y[0]  # [E, 4], [E, H, 2, 4]
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    log_prob, rewards, _ = suite.rollout(lambda obs: logits.expand(*obs.shape[:-1], 4), p, noise)
    for e in range(6):
        for t in range(3):
            arm = int((logits.log_softmax(0) + noise[e, t, 0]).argmax())
            assert log_prob[e, t].item() == pytest.approx(logits.log_softmax(0)[arm].item())
            assert rewards[e, t].item() == float(noise[e, t, 1, arm] < p[e, arm])
    # Gumbel-max samples the softmax policy; payouts are Bernoulli(p)
    many = Bandits(arms=4, shots=4000, queries=1).sample("train", 1, torch.Generator().manual_seed(2))
    arms = (logits.log_softmax(0) + many.support_y[0, :, 0, 0]).argmax(-1)
    assert torch.bincount(arms, minlength=4).double().div(4000).tolist() == \
        pytest.approx(logits.softmax(0).tolist(), abs=0.03)
    pays = (many.support_y[0, :, 0, 1] < many.support_x[0]).double().mean(0)
    assert pays.tolist() == pytest.approx(many.support_x[0, 0].tolist(), abs=0.03)


# -- the loss ---------------------------------------------------------------------------------------


def test_linear_feature_baseline_is_rllabs_ridge_regression():
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(5, 7, 2, generator=generator, dtype=torch.float64)
    returns = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    alive = torch.ones(5, 7, dtype=torch.float64)
    alive[1, 4:] = 0  # an episode that ended after 4 steps: rllab's path is 4 steps long

    def features(obs):  # rllab's LinearFeatureBaseline._features of one path
        t = np.arange(len(obs)).reshape(-1, 1) / 100.0
        o = np.clip(obs, -10, 10)
        return np.concatenate([o, o**2, t, t**2, t**3, np.ones((len(obs), 1))], axis=1)

    lengths = alive.sum(1).int().tolist()
    matrix = np.concatenate([features(observations[e, :n].numpy()) for e, n in enumerate(lengths)])
    target = np.concatenate([returns[e, :n].numpy() for e, n in enumerate(lengths)])
    coefficients = np.linalg.lstsq(matrix.T @ matrix + 1e-5 * np.eye(matrix.shape[1]), matrix.T @ target, rcond=None)[0]
    got = linear_feature_baseline(observations, returns, alive)
    for e, n in enumerate(lengths):
        assert got[e, :n].numpy() == pytest.approx(features(observations[e, :n].numpy()) @ coefficients, rel=1e-9)


def test_the_surrogates_gradient_is_reinforce_with_normalised_advantages():
    generator = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    observations = torch.randn(4, 6, 2, generator=generator, dtype=torch.float64)
    alive = torch.ones(4, 6, dtype=torch.float64)
    log_prob = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    returns = torch.tensor([[sum(0.9**k * r[t + k] for k in range(6 - t)) for t in range(6)]
                            for r in rewards.tolist()], dtype=torch.float64)
    assert torch.allclose(discounted_returns(rewards, 0.9), returns, rtol=1e-12)
    advantages = returns - linear_feature_baseline(observations, returns, alive)
    advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    (grad,) = torch.autograd.grad(policy_gradient_surrogate(log_prob, rewards, observations, alive, 0.9), log_prob)
    assert torch.allclose(grad, -advantages / 24, rtol=1e-10)


# -- the engine: vectorised meta-gradients against a per-task loop ----------------------------------------


def reference_meta_gradient(suite, model, batch, inner_lr, first_order):
    """Mean over tasks of ∇θ L_query(θ − α∇θ L_support(θ)) by plain autograd, task by task, with
    the suite's loss (the rollouts' random numbers are the task tensors)."""
    theta = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}

    def loss(params, x, y):
        return suite.task_loss(lambda obs: functional_call(model, params, (obs,)), x, y)

    total = 0.0
    for sx, sy, qx, qy in zip(*batch.tensors()):
        grads = torch.autograd.grad(loss(theta, sx, sy), list(theta.values()), create_graph=not first_order)
        fast = {n: p - inner_lr * g for (n, p), g in zip(theta.items(), grads)}
        total = total + loss(fast, qx, qy)
    return [g for g in torch.autograd.grad(total / batch.num_tasks, list(theta.values()))]


@pytest.mark.parametrize("suite", RL_SUITES)
@pytest.mark.parametrize(("algorithm", "first_order"), [("maml", False), ("fomaml", True)])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_the_rl_meta_gradient_equals_a_per_task_loop_on_the_same_rollouts(host, one_thread, suite, algorithm,
                                                                           first_order, execution):
    model, batch = double(suite)
    learner = host.algorithms.get(algorithm).factory(model, suite, inner_lr=0.1, execution=execution)
    learner.meta_gradient(batch)
    expected = reference_meta_gradient(suite, model, batch, 0.1, first_order)
    for (name, p), reference in zip(model.named_parameters(), expected):
        assert torch.allclose(p.grad, reference, rtol=1e-8, atol=1e-12), name
    assert any(bool(g.any()) for g in expected)


@pytest.mark.parametrize("suite", RL_SUITES)
@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "cavia", "reptile"])
def test_vmap_over_rl_tasks_equals_the_loop_for_every_algorithm(host, one_thread, suite, algorithm):
    results = []
    for execution in ("vmap", "loop"):
        model, batch = double(suite)
        learner = host.algorithms.get(algorithm).factory(model, suite, execution=execution).double()
        results.append((learner.chunk_meta_gradient(batch), learner.predict(batch)))
    ((grads_v, loss_v), predicted_v), ((grads_l, loss_l), predicted_l) = results
    assert torch.allclose(loss_v, loss_l, rtol=1e-9) and torch.allclose(predicted_v, predicted_l, rtol=1e-9)
    assert predicted_v.shape == batch.query_x.shape[:2]  # one return per query episode
    for a, b in zip(grads_v, grads_l):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-8, atol=1e-12))


def test_evaluation_scores_the_mean_return_of_the_adapted_policy(host, one_thread):
    suite = Navigation2D(**SMALL_NAVIGATION)
    model, batch = double(suite)
    learner = host.algorithms.get("maml").factory(model, suite, inner_lr=0.1)
    returns = learner.predict(batch)
    assert torch.equal(task_metrics(suite.kind, returns, batch.query_y), returns.mean(1))
    # the adapted policy is what plays the query episodes: one inner step by hand, then play
    params = dict(model.named_parameters())
    sx, sy, qx, qy = (t[0] for t in batch.tensors())
    support = suite.task_loss(lambda obs: functional_call(model, params, (obs,)), sx, sy)
    grads = torch.autograd.grad(support, list(params.values()))
    adapted = {n: (p - 0.1 * g).detach() for (n, p), g in zip(params.items(), grads)}
    by_hand = suite.task_prediction(lambda obs: functional_call(model, adapted, (obs,)), qx, qy)
    assert torch.allclose(returns[0], by_hand, rtol=1e-10)
    assert not torch.allclose(returns[0], suite.task_prediction(lambda obs: model(obs), qx, qy))


def test_the_same_test_tasks_give_every_algorithm_the_same_random_numbers():
    suite = Navigation2D(**SMALL_NAVIGATION)
    first, again = (TaskList(suite, "test", 5, 20170306, batch) for batch in (5, 2))
    assert first.digest() == again.digest()
    a, b = (TaskBatch.cat(list(tasks)) for tasks in (first, again))
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))


# -- the contract and the conformance kit -------------------------------------------------------------


def test_supervised_suites_keep_their_loss_and_metric(host):
    sinusoid = host.suites.get("sinusoid").factory()
    assert not plays_tasks(sinusoid) and plays_tasks(Navigation2D()) and plays_tasks(Bandits())
    assert (sinusoid.metric, sinusoid.higher_is_better) == METRICS["regression"] == ("mse", False)


@pytest.mark.parametrize("suite", [Navigation2D(**SMALL_NAVIGATION), Bandits()], ids=lambda s: s.name)
def test_rl_suites_conform(suite):
    assert_suite_conforms(suite)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "cavia", "reptile"])
def test_algorithms_conform_on_an_rl_suite(host, one_thread, algorithm):
    assert_learner_conforms(host.algorithms.get(algorithm).factory, Navigation2D(**SMALL_NAVIGATION),
                            {"inner_lr": 0.1}, steps=10)


class RandomNavigation(Navigation2D):
    """Broken: draws its rollouts' noise from the global RNG."""

    def task_loss(self, apply, x, y):
        return super().task_loss(apply, x, torch.randn(y.shape, dtype=y.dtype))


class DetachedNavigation(Navigation2D):
    """Broken: a loss with no gradient in the policy."""

    def task_loss(self, apply, x, y):
        return super().task_loss(lambda obs: apply(obs).detach(), x, y)


class ScalarPerEpisode(Navigation2D):
    """Broken: a loss per episode, not a scalar."""

    def task_loss(self, apply, x, y):
        return torch.stack([super(ScalarPerEpisode, self).task_loss(apply, x[i : i + 1], y[i : i + 1])
                            for i in range(x.shape[0])])


@pytest.mark.parametrize(("suite", "checks"), [
    (RandomNavigation(**SMALL_NAVIGATION), ["task_loss and task_prediction are deterministic",
                                            "task_loss and task_prediction under vmap equal a loop"]),
    (DetachedNavigation(**SMALL_NAVIGATION), ["task_loss is a finite scalar differentiable in the parameters"]),
    (ScalarPerEpisode(**SMALL_NAVIGATION), ["task_loss is a finite scalar differentiable in the parameters"]),
])
def test_a_broken_played_suite_fails_the_check_it_breaks(suite, checks):
    assert [f.check for f in check_suite(suite)] == checks


def test_a_policy_of_the_wrong_size_is_a_clear_error():
    suite = Navigation2D(**SMALL_NAVIGATION)
    batch = suite.sample("train", 1, torch.Generator().manual_seed(0))
    with pytest.raises(Exception, match="must output 4 values per observation"):
        suite.task_loss(torch.nn.Linear(2, 2), batch.support_x[0], batch.support_y[0])
    with pytest.raises(Exception, match=r"discount must be in \(0, 1\]"):
        Navigation2D(discount=1.5)
    with pytest.raises(Exception, match="arms must be at least 2"):
        Bandits(arms=1)


# -- the harness ---------------------------------------------------------------------------------------


def test_zoo_bench_runs_maml_fomaml_and_cavia_on_navigation2d(zoo, tmp_path, one_thread):
    spec = tmp_path / "nav-tiny.toml"
    spec.write_text('extends = "navigation2d"\n[protocol]\nshots = 3\nqueries = 2\nhorizon = 10\n'
                    '[evaluation]\ntest_tasks = 4\nval_tasks = 2\n[training]\nsteps = 2\nval_every = 2\n')
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "maml,fomaml,cavia",
                               "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0, stdout + stderr
    assert "test return" in stdout and all(name in stdout for name in ("maml", "fomaml", "cavia")), stdout


def test_a_model_data_learner_on_an_rl_suite_is_a_clear_error(zoo, tmp_path):
    code, stdout, stderr = zoo("bench", "--suite", "bandits", "--algos", "protonet", "--out", str(tmp_path), "--dry-run")
    assert code == 2 and "protonet takes only classification suites" in stderr, stdout + stderr


def test_the_built_in_rl_benchmarks_load(host):
    from metazoo.benchmark import find_benchmark

    for name, suite in (("navigation2d", Navigation2D), ("bandits", Bandits)):
        spec = find_benchmark(name)
        assert spec.suite == name and spec.evaluation.test_tasks >= 100
        assert spec.evaluation.adaptation_steps == (0, 1, 3)  # the return after 0, 1 and 3 inner steps
        assert isinstance(host.suites.get(name).factory(**spec.protocol), suite)
        for algorithm, hyperparameters in spec.algorithms.items():
            host.algorithms.get(algorithm).factory(host.suites.get(name).factory(**spec.protocol).make_model(),
                                                   host.suites.get(name).factory(**spec.protocol), **hyperparameters)


def test_a_suite_without_the_hooks_still_trains_by_its_kinds_loss(host):
    sinusoid = host.suites.get("sinusoid").factory()
    torch.manual_seed(0)
    model = sinusoid.make_model().double()
    batch = sinusoid.sample("train", 2, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    with_suite = host.algorithms.get("maml").factory(model, sinusoid)
    without = host.algorithms.get("maml").factory(model, None)
    without.kind = "regression"
    assert torch.equal(with_suite.chunk_objective(batch)[0], without.chunk_objective(batch)[0])
