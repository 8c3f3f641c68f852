"""HalfCheetah goal velocity and goal direction (Finn, Abbeel & Levine, ICML 2017, §5.3),
simulated by MuJoCo. Optional: the suites need the ``mujoco`` and ``gymnasium`` packages
(``pip install 'metazoo[mujoco]'``); without them they are still listed, and a run that names
one stops before anything starts, saying what to install.

The protocol is the paper's and its reference code's (``cbfinn/maml_rl``:
``rllab/envs/mujoco/half_cheetah_env_rand.py``, ``half_cheetah_env_rand_direc.py`` and
``maml_examples/cluster_maml_trpo_cheetah.py``):

- ``halfcheetah-vel``: a task is a goal velocity v* ~ U[0, 2] (§5.3); the reward of a step is
  −|v − v*| − 0.05‖a‖², v the forward velocity;
- ``halfcheetah-dir``: a task is a direction d, forward (+1) or backward (−1) with probability ½
  each (the code draws U[0, 2] and takes −1 below 1); the reward is d·v − 0.05‖a‖²;
- horizon H = 200, K = 20 episodes to adapt on and 20 after it, discount γ = 0.99, the policy
  two hidden layers of 100 ReLU units (:class:`metazoo.GaussianMLP`).

The robot is gymnasium's ``HalfCheetah-v5``: its model file, frame skip 5 (one step is 0.05 s),
observations ``qpos[1:] ⊕ qvel`` (17), reset noise U[−0.1, 0.1] on the positions and 0.1·N(0, 1)
on the velocities, v the root's forward velocity (Δx / 0.05 s), actions clipped to [−1, 1]. The
reference code's rllab cheetah differs in two details: its observations add the torso's centre of
mass (20) and its v is that centre's velocity.

The tasks are played as navigation2d's (:meth:`metazoo.TaskSuite.task_loss`): ``support_x`` /
``query_x`` hold per episode the task's parameter and the episode's reset noise ``[T, K, 19]``,
``support_y`` / ``query_y`` the standard normal noise of every action ``[T, K, H, 6]``. The physics
is the torch operator ``metazoo::mujoco_halfcheetah_step`` on MuJoCo's whole integration state
(``mjSTATE_INTEGRATION``, the solver's warm start included, so a rollout is bit for bit
gymnasium's ``env.step``); it has a ``vmap`` rule, so a meta-batch's rollouts step as one batch of
``T·K`` simulations, and a rollout is a pure function of the policy and the task's tensors.
"""

from __future__ import annotations

import functools
import os
import warnings
from abc import abstractmethod
from dataclasses import dataclass

import metazoo
import torch
from metazoo import GaussianMLP, gaussian_log_prob, gaussian_parameters
from metazoo.config import build_config, positive
from metazoo.errors import ZooError
from metazoo.rl import policy_gradient_surrogate
from metazoo.tasks import TaskBatch, TaskSuite, split_stream
from torch import Tensor

PAPER = "Finn, Abbeel & Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017, §5.3"
INSTALL = "pip install 'metazoo[mujoco]' (the mujoco and gymnasium packages)"
FRAME_SKIP = 5  # gymnasium HalfCheetah-v5's: MuJoCo steps per action
NQ, NV, NU = 9, 9, 6  # HalfCheetah's positions, velocities and actuators
QPOS = slice(1, 1 + NQ)  # where mjSTATE_INTEGRATION keeps them (after the time)
QVEL = slice(1 + NQ, 1 + NQ + NV)


@functools.cache
def physics():
    """(model, data, state size) of gymnasium's HalfCheetah in MuJoCo, or a clear error."""
    try:
        import gymnasium
        import mujoco
    except ImportError as error:
        raise ZooError(f"the halfcheetah suites need MuJoCo through gymnasium ({error.name} is not "
                       f"installed): {INSTALL}") from None
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "half_cheetah.xml")
    # MuJoCo's compiler warns that the file's settotalmass is deprecated, on stderr and into
    # MUJOCO_LOG.TXT in the working directory; a DeprecationWarning (hidden by default) instead.
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", DeprecationWarning, stacklevel=2))
    try:
        model = mujoco.MjModel.from_xml_path(path)
    finally:
        mujoco.set_mju_user_warning(previous)
    if (model.nq, model.nv, model.nu) != (NQ, NV, NU):
        raise ZooError(f"gymnasium's half_cheetah.xml has nq, nv, nu = {model.nq, model.nv, model.nu}; "
                       f"the halfcheetah suites expect {NQ, NV, NU}")
    data = mujoco.MjData(model)
    return model, data, mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION)


def reset_state() -> Tensor:
    """MuJoCo's integration state after ``mj_resetData`` (positions ``qpos0``, all else zero), float64."""
    return torch.tensor(_reset_state())


@functools.cache
def _reset_state():
    import mujoco
    import numpy as np

    model, data, size = physics()
    mujoco.mj_resetData(model, data)
    state = np.empty(size)
    mujoco.mj_getState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    return state


@torch.library.custom_op("metazoo::mujoco_halfcheetah_step", mutates_args=())
def physics_step(state: Tensor, action: Tensor) -> Tensor:
    """The integration states ``[..., S]`` (float64) after one action ``[..., 6]`` each
    (``FRAME_SKIP`` MuJoCo steps at that control), on the CPU, one simulation at a time (through
    one shared ``MjData``: not for concurrent threads)."""
    import mujoco

    model, data, size = physics()
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    if state.shape[-1] != size or action.shape[-1] != NU or state.shape[:-1] != action.shape[:-1]:
        raise ZooError(f"mujoco_halfcheetah_step: states [..., {size}] and actions [..., {NU}] with the "
                       f"same leading shape expected, got {tuple(state.shape)} and {tuple(action.shape)}")
    states = state.detach().to("cpu", torch.float64).reshape(-1, size).numpy().copy()
    actions = action.detach().to("cpu", torch.float64).reshape(-1, NU).numpy()
    for row, control in zip(states, actions):
        mujoco.mj_setState(model, data, row, spec)
        data.ctrl[:] = control
        mujoco.mj_step(model, data, nstep=FRAME_SKIP)
        mujoco.mj_getState(model, data, row, spec)
    return torch.from_numpy(states).reshape(state.shape).to(state.device)


@physics_step.register_fake
def _(state: Tensor, action: Tensor) -> Tensor:
    return torch.empty_like(state)


@physics_step.register_vmap
def _(info, in_dims, state: Tensor, action: Tensor):
    def batched(t: Tensor, dim: int | None) -> Tensor:
        return t.expand(info.batch_size, *t.shape) if dim is None else t.movedim(dim, 0)

    return physics_step(batched(state, in_dims[0]), batched(action, in_dims[1])), 0


@dataclass(frozen=True)
class HalfCheetahConfig:
    shots: int = 20  # K episodes per task for the adaptation
    queries: int = 20  # episodes per task after it (the meta-objective and the test return)
    horizon: int = 200  # H
    reset_noise: float = 0.1  # gymnasium's reset_noise_scale
    control_cost: float = 0.05  # the reward's weight of ‖a‖² (the reference code's 0.1 · 0.5)
    discount: float = 0.99  # γ of the returns-to-go in the loss

    def __post_init__(self) -> None:
        positive(self, "shots", "queries", "horizon")
        if self.reset_noise < 0 or self.control_cost < 0:
            raise ZooError(f"suite halfcheetah: reset_noise and control_cost must be >= 0, got "
                           f"{self.reset_noise} and {self.control_cost}")
        if not 0 < self.discount <= 1:
            raise ZooError(f"suite halfcheetah: discount must be in (0, 1], got {self.discount}")


class HalfCheetah(TaskSuite):
    """The two suites' common part; a subclass draws the task parameters and scores velocities."""

    kind = "reinforcement"

    def __init__(self, **protocol):
        self.config = build_config(HalfCheetahConfig, protocol, f"suite {self.name}")

    @abstractmethod
    def draw_tasks(self, num_tasks: int, generator: torch.Generator) -> Tensor:
        """The task parameters ``[num_tasks]``."""

    @abstractmethod
    def forward_reward(self, task: Tensor, velocity: Tensor) -> Tensor:
        """The reward for forward velocities ``velocity`` ``[E]`` in the task ``task`` ``[E]``."""

    def prepare(self) -> None:
        physics()

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)
        c = self.config
        task = self.draw_tasks(num_tasks, own).view(num_tasks, 1, 1)

        def episodes(k: int) -> tuple[Tensor, Tensor]:
            qpos = c.reset_noise * (2 * torch.rand(num_tasks, k, NQ, generator=own) - 1)
            qvel = c.reset_noise * torch.randn(num_tasks, k, NV, generator=own)
            noise = torch.randn(num_tasks, k, c.horizon, NU, generator=own)
            return torch.cat([task.expand(-1, k, -1), qpos, qvel], dim=-1), noise

        return TaskBatch(*episodes(c.shots), *episodes(c.queries))

    def make_model(self):
        return GaussianMLP(NQ - 1 + NV, 100, 100, actions=NU)

    def rollout(self, apply, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Play one task's episodes: ``x`` ``[E, 19]`` (task, reset noise), ``noise`` ``[E, H, 6]``
        → (log π(a_t|s_t), rewards, observations), ``[E, H]``, ``[E, H]``, ``[E, H, 17]``; only the
        log-probabilities carry a gradient."""
        episodes, horizon, _ = noise.shape
        task = x[:, 0]
        dt = physics()[0].opt.timestep * FRAME_SKIP
        with torch.no_grad():  # the states and actions are constants of the surrogate
            reset = reset_state().to(x.device)
            state = torch.cat([reset[:QPOS.start].expand(episodes, -1), reset[QPOS] + x[:, 1:1 + NQ].double(),
                               reset[QVEL] + x[:, 1 + NQ:].double(), reset[QVEL.stop:].expand(episodes, -1)], dim=-1)
            observations, actions, rewards = [], [], []
            for t in range(horizon):
                observation = state[:, QPOS.start + 1:QVEL.stop].to(x.dtype)  # qpos[1:] ⊕ qvel
                mean, log_std = gaussian_parameters(apply(observation), NU, self.name)
                action = mean + log_std.exp() * noise[:, t]
                control = action.clamp(-1, 1)
                after = physics_step(state, control.double())
                velocity = ((after[:, QPOS.start] - state[:, QPOS.start]) / dt).to(x.dtype)
                rewards.append(self.forward_reward(task, velocity) - self.config.control_cost * (control**2).sum(-1))
                observations.append(observation)
                actions.append(action)
                state = after
        observations, actions, rewards = torch.stack(observations, 1), torch.stack(actions, 1), torch.stack(rewards, 1)
        mean, log_std = gaussian_parameters(apply(observations), NU, self.name)  # one batched pass, with the gradient
        return gaussian_log_prob(actions, mean, log_std), rewards, observations

    def task_loss(self, apply, x, y):
        log_prob, rewards, observations = self.rollout(apply, x, y)
        return policy_gradient_surrogate(log_prob, rewards, observations, torch.ones_like(rewards),
                                         self.config.discount)

    def task_prediction(self, apply, x, y):
        """The (undiscounted) return of each episode ``[E]``."""
        return self.rollout(apply, x, y)[1].sum(-1)


class HalfCheetahVel(HalfCheetah):
    name = "halfcheetah-vel"
    goal_range = (0.0, 2.0)  # §5.3: goal velocities uniform between 0.0 and 2.0

    def draw_tasks(self, num_tasks, generator):
        low, high = self.goal_range
        return low + (high - low) * torch.rand(num_tasks, generator=generator)

    def forward_reward(self, task, velocity):
        return -(velocity - task).abs()


class HalfCheetahDir(HalfCheetah):
    name = "halfcheetah-dir"

    def draw_tasks(self, num_tasks, generator):
        return torch.randint(0, 2, (num_tasks,), generator=generator).float() * 2 - 1

    def forward_reward(self, task, velocity):
        return task * velocity


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("halfcheetah-vel", HalfCheetahVel, paper=PAPER,
                 summary="meta-RL: a MuJoCo half-cheetah runs at a random goal velocity (optional: mujoco)")
    registry.add("halfcheetah-dir", HalfCheetahDir, paper=PAPER,
                 summary="meta-RL: a MuJoCo half-cheetah runs forward or backward (optional: mujoco)")
