"""2D navigation: a point agent moves to a goal (Finn, Abbeel & Levine, ICML 2017, §5.3).

The values are those of the paper and of its rllab-based reference code (``cbfinn/maml_rl``:
``maml_examples/point_env_randgoal.py`` wrapped in rllab's ``normalize``, and
``maml_examples/maml_trpo_point.py``):

- a task is a goal drawn uniformly in [−0.5, 0.5]²; the agent starts at the origin and observes
  its position;
- an action a ∈ R² is a velocity command: the position moves by clip(0.1·a, −0.1, 0.1) (the
  reference code's ``normalize`` maps a ∈ [−1, 1] onto the action box [−0.1, 0.1]² and clips);
- the reward is minus the distance to the goal after the move (the code's; the paper's text says
  the squared distance), and an episode ends at the horizon H = 100 or once the agent is within
  0.01 of the goal in both coordinates (the step that gets there still counts);
- K = 20 episodes per task for the adaptation (``shots``) and 20 after it (``queries``, the
  paper's "20 trajectories"), discount γ = 0.99 (rllab's default in ``BatchMAMLPolopt``).

The tasks are played (:meth:`metazoo.TaskSuite.task_loss`): ``support_x`` / ``query_x`` hold the
goal once per episode ``[T, K, 2]``, ``support_y`` / ``query_y`` the standard normal noise of
every action ``[T, K, H, 2]``, drawn when the task is. An episode's action is
``a_t = μ(s_t) + σ ⊙ ε_t`` with the noise ε held fixed, so a rollout is a deterministic function
of the policy and the task's tensors: the same test tasks give every algorithm the same random
numbers, and rolling out a meta-batch under ``vmap`` equals a loop over its tasks. The loss of a
set of episodes is the REINFORCE surrogate with the linear feature baseline
(:func:`metazoo.rl.policy_gradient_surrogate`); what ``predict`` returns is each query
episode's (undiscounted) return, so the test metric is the mean return of the adapted policy.

The policy (:class:`metazoo.policies.GaussianMLP`, the reference code's
``MAMLGaussianMLPPolicy``): two hidden layers of 100 ReLU units (§5.3). Each inner step replays the support episodes with
the current parameters and the same noise; the reference code draws new noise for each step
(the same thing for the paper's one step).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Navigation2DConfig:
    shots: int = 20  # K episodes per task for the adaptation
    queries: int = 20  # episodes per task after it (the meta-objective and the test return)
    horizon: int = 100  # H
    goal_range: tuple[float, float] = (-0.5, 0.5)  # each goal coordinate ~ U[low, high]
    max_speed: float = 0.1  # the action box [−0.1, 0.1]², reached by a = ±1
    discount: float = 0.99  # γ of the returns-to-go in the loss

    def __post_init__(self) -> None:
        positive(self, "shots", "queries", "horizon", "max_speed")
        if not 0 < self.discount <= 1:
            raise ZooError(f"suite navigation2d: discount must be in (0, 1], got {self.discount}")


class Navigation2D(TaskSuite):
    name = "navigation2d"
    kind = "reinforcement"

    def __init__(self, **protocol):
        self.config = build_config(Navigation2DConfig, protocol, "suite navigation2d")

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)
        c = self.config
        low, high = c.goal_range
        goal = low + (high - low) * torch.rand(num_tasks, 1, 2, generator=own)
        support_noise = torch.randn(num_tasks, c.shots, c.horizon, 2, generator=own)
        query_noise = torch.randn(num_tasks, c.queries, c.horizon, 2, generator=own)
        return TaskBatch(goal.expand(-1, c.shots, -1).contiguous(), support_noise,
                         goal.expand(-1, c.queries, -1).contiguous(), query_noise)

    def make_model(self):
        return GaussianMLP(2, 100, 100, actions=2)

    def rollout(self, apply, goal: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Play one task's episodes: goals ``[E, 2]``, noise ``[E, H, 2]`` → (log π(a_t|s_t),
        rewards, observations, alive), ``[E, H]``, ``[E, H]``, ``[E, H, 2]``, ``[E, H]``; only the
        log-probabilities carry a gradient."""
        episodes, horizon, _ = noise.shape
        position = torch.zeros_like(goal)
        observations, actions = [], []
        with torch.no_grad():  # the states and actions are constants of the surrogate
            for t in range(horizon):
                mean, log_std = gaussian_parameters(apply(position), 2, self.name)
                action = mean + log_std.exp() * noise[:, t]
                observations.append(position)
                actions.append(action)
                position = position + (self.config.max_speed * action).clamp(-self.config.max_speed,
                                                                              self.config.max_speed)
        observations, actions = torch.stack(observations, 1), torch.stack(actions, 1)  # [E, H, 2]
        after = torch.cat([observations[:, 1:], position.unsqueeze(1)], dim=1)  # the position after each step
        offset = after - goal.unsqueeze(1)
        rewards = -offset.norm(dim=-1)  # [E, H]
        done = (offset.abs() < 0.01).all(-1).to(rewards.dtype)
        alive = torch.cat([torch.ones_like(done[:, :1]), torch.cumprod(1 - done, dim=1)[:, :-1]], dim=1)
        mean, log_std = gaussian_parameters(apply(observations), 2, self.name)  # one batched pass, with the gradient
        log_prob = gaussian_log_prob(actions, mean, log_std)
        return log_prob, rewards * alive, observations, alive

    def task_loss(self, apply, x, y):
        log_prob, rewards, observations, alive = self.rollout(apply, x, y)
        return policy_gradient_surrogate(log_prob, rewards, observations, alive, self.config.discount)

    def task_prediction(self, apply, x, y):
        """The return of each episode ``[E]`` (undiscounted, as rllab's ``AverageReturn``)."""
        return self.rollout(apply, x, y)[1].sum(-1)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("navigation2d", Navigation2D, paper=PAPER,
                 summary="meta-RL: a point agent reaches a random goal in the plane (played in torch)")
