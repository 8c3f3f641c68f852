"""The MuJoCo half-cheetah suites (optional extra): the physics operator against gymnasium's
``HalfCheetah-v5``, the paper's tasks and rewards, the played-task contract under ``vmap``, and
the clear stop where MuJoCo is not installed (that test runs everywhere)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from metazoo.errors import ZooError
from metazoo.plugins import halfcheetah
from metazoo.plugins.halfcheetah import HalfCheetahDir, HalfCheetahVel, physics_step, reset_state
from metazoo.testing import assert_learner_conforms, assert_suite_conforms
from torch.func import functional_call

SMALL = {"shots": 8, "queries": 8, "horizon": 6}  # ≥ 8 episodes: vmap and a loop round alike


@pytest.fixture
def gymnasium():
    """gymnasium, with MuJoCo's warnings kept (gymnasium's own model loads would otherwise write
    MUJOCO_LOG.TXT into the working directory)."""
    mujoco = pytest.importorskip("mujoco", reason="the halfcheetah suites' optional extra (pip install 'metazoo[mujoco]')")
    module = pytest.importorskip("gymnasium", reason="the halfcheetah suites' optional extra")
    previous, messages = mujoco.get_mju_user_warning(), []
    mujoco.set_mju_user_warning(messages.append)
    yield module
    mujoco.set_mju_user_warning(previous)


def cheetah_env(gymnasium, qpos_noise, qvel_noise):
    """gymnasium's HalfCheetah-v5 (unwrapped: no time limit), set to a reset state plus the noise."""
    env = gymnasium.make("HalfCheetah-v5").unwrapped
    env.reset(seed=0)
    env.set_state(env.init_qpos + np.asarray(qpos_noise, np.float64), env.init_qvel + np.asarray(qvel_noise, np.float64))
    return env


def policy(suite, seed=0):
    torch.manual_seed(seed)
    model = suite.make_model()
    params = dict(model.named_parameters())
    return model, lambda obs: functional_call(model, params, (obs,))


def test_the_physics_step_is_gymnasiums_env_step(gymnasium):
    rng = np.random.default_rng(0)
    qpos, qvel = rng.uniform(-0.1, 0.1, 9), 0.1 * rng.standard_normal(9)
    env = cheetah_env(gymnasium, qpos, qvel)
    state = reset_state().clone()
    state[halfcheetah.QPOS] += torch.from_numpy(qpos)
    state[halfcheetah.QVEL] += torch.from_numpy(qvel)
    for _ in range(60):  # long enough for the feet to hit the ground: contacts, warm-started solver
        action = rng.uniform(-1, 1, 6)
        env.step(action)
        state = physics_step(state, torch.from_numpy(action))
        assert np.array_equal(state[halfcheetah.QPOS].numpy(), env.data.qpos)
        assert np.array_equal(state[halfcheetah.QVEL].numpy(), env.data.qvel)


@pytest.mark.parametrize("suite_class", [HalfCheetahVel, HalfCheetahDir])
def test_a_rollout_replays_in_gymnasium_with_the_papers_rewards(gymnasium, suite_class):
    suite = suite_class(**SMALL)
    batch = suite.sample("train", 2, torch.Generator().manual_seed(1))
    model, apply = policy(suite)
    x, noise = batch.support_x[1], batch.support_y[1]
    with torch.no_grad():
        log_prob, rewards, observations = suite.rollout(apply, x, noise)
        for episode in range(x.shape[0]):
            task = x[episode, 0].item()
            env = cheetah_env(gymnasium, x[episode, 1:10].numpy(), x[episode, 10:].numpy())
            for t in range(SMALL["horizon"]):
                assert torch.equal(torch.from_numpy(env._get_obs()).float(), observations[episode, t])
                # the step's action from the observations the rollout saw (same layout: same rounding)
                mean, log_std = apply(observations[:, t].contiguous()).split(6, dim=-1)
                action = (mean + log_std.exp() * noise[:, t])[episode].clamp(-1, 1)
                *_, info = env.step(action.double().numpy())
                velocity = info["x_velocity"]
                forward = -abs(velocity - task) if suite_class is HalfCheetahVel else task * velocity
                expected = forward - 0.05 * float((action.double() ** 2).sum())
                assert rewards[episode, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert log_prob.shape == rewards.shape == (SMALL["shots"], SMALL["horizon"])


def test_the_tasks_follow_the_papers_protocol():
    vel = HalfCheetahVel().sample("test", 400, torch.Generator().manual_seed(0))
    goals = vel.support_x[:, 0, 0]
    assert vel.support_x.shape == (400, 20, 19) and vel.support_y.shape == (400, 20, 200, 6)
    assert vel.query_x.shape == (400, 20, 19) and vel.query_y.shape == (400, 20, 200, 6)
    assert 0 <= goals.min() < 0.1 and 1.9 < goals.max() <= 2  # U[0, 2]
    assert torch.equal(vel.query_x[:, :, 0], goals[:, None].expand(-1, 20))  # one task: one goal
    assert vel.support_x[..., 1:10].abs().max() <= 0.1  # positions: U[−0.1, 0.1]
    assert 0.09 < vel.support_x[..., 10:].std() < 0.11  # velocities: 0.1·N(0, 1)
    directions = HalfCheetahDir().sample("test", 400, torch.Generator().manual_seed(0)).support_x[:, 0, 0]
    assert set(directions.tolist()) == {-1.0, 1.0} and abs(directions.mean()) < 0.15


@pytest.mark.parametrize("suite", [HalfCheetahVel(**SMALL), HalfCheetahDir(**SMALL)], ids=lambda s: s.name)
def test_the_halfcheetah_suites_conform(gymnasium, suite):
    assert_suite_conforms(suite)


def test_maml_adapts_a_policy_on_halfcheetah(gymnasium, host, one_thread):
    assert_learner_conforms(host.algorithms.get("maml").factory, HalfCheetahVel(**SMALL), {"inner_lr": 0.1}, steps=3)


def test_without_mujoco_a_run_stops_before_it_starts_saying_what_to_install(monkeypatch, zoo, tmp_path):
    halfcheetah.physics.cache_clear()
    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco → ImportError
    try:
        with pytest.raises(ZooError, match=r"mujoco is not installed.*pip install 'metazoo\[mujoco\]'"):
            HalfCheetahVel().prepare()
        code, _, err = zoo("bench", "--suite", "halfcheetah-vel", "--algos", "maml", "--steps", "1",
                           "--out", str(tmp_path / "out"))
        assert code != 0 and "pip install 'metazoo[mujoco]'" in err
        assert "Traceback" not in err and not any((tmp_path / "out").iterdir())  # no run started
    finally:
        halfcheetah.physics.cache_clear()
