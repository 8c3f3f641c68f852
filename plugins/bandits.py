"""Multi-armed bandits: meta-RL's simplest tasks (Duan et al. 2016, RL², §4.1; Wang et al. 2016,
"Learning to reinforcement learn", §3.1).

A task is a bandit of ``arms`` arms (5 by default; RL² tests 5, 10 and 50) whose arm i pays 1
with probability p_i and 0 otherwise, p_i ~ U[0, 1] independently (RL²'s and Wang et al.'s
independent Bernoulli bandits). An episode is ``horizon`` pulls (1 by default); the learner
adapts on ``shots`` episodes and is scored on ``queries`` more with its adapted policy: the test
metric is the mean return of those episodes (with one pull each, the mean reward per pull:
0.5 for a uniform policy, 5/6 in expectation for one that knows the best of 5 arms).

The tasks are played (:meth:`metazoo.TaskSuite.task_loss`): ``support_x`` / ``query_x`` hold the
arm probabilities once per episode ``[T, K, arms]``, ``support_y`` / ``query_y`` every random
number of the episodes ``[T, K, horizon, 2, arms]``: Gumbel noise that picks the arm
(``argmax(logits + g)``, an exact sample of the softmax policy) and uniform numbers that decide
the payouts (arm i pays at a pull where u_i < p_i), drawn when the task is. A rollout is then a
deterministic function of the policy and the task's tensors, and the same test tasks give every
algorithm the same pulls. The loss is the REINFORCE surrogate with the linear feature baseline
(:func:`metazoo.rl.policy_gradient_surrogate`, discount 0.99).

The policy is a softmax over the arms from the navigation policy's network (two hidden layers of
100 ReLU units) on a constant observation, 1: a bandit has no state, and the papers' policies
(recurrent networks that read the past pulls) have no gradient-based counterpart to copy, so
this choice is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import metazoo
import torch
import torch.nn.functional as F
from metazoo.config import build_config, positive
from metazoo.errors import ZooError
from metazoo.models import MLP
from metazoo.rl import policy_gradient_surrogate
from metazoo.tasks import TaskBatch, TaskSuite, split_stream
from torch import Tensor

PAPER = ("Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel. RL²: Fast Reinforcement Learning via Slow "
         "Reinforcement Learning. arXiv:1611.02779, 2016, §4.1; Wang et al. Learning to reinforcement learn. "
         "arXiv:1611.05763, 2016")
DISCOUNT = 0.99


@dataclass(frozen=True)
class BanditsConfig:
    arms: int = 5
    shots: int = 20  # episodes per task for the adaptation
    queries: int = 20  # episodes per task after it (the meta-objective and the test return)
    horizon: int = 1  # pulls per episode

    def __post_init__(self) -> None:
        positive(self, "arms", "shots", "queries", "horizon")
        if self.arms < 2:
            raise ZooError(f"suite bandits: arms must be at least 2, got {self.arms}")


class Bandits(TaskSuite):
    name = "bandits"
    kind = "reinforcement"

    def __init__(self, **protocol):
        self.config = build_config(BanditsConfig, protocol, "suite bandits")

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)
        c = self.config
        p = torch.rand(num_tasks, 1, c.arms, generator=own)

        def noise(episodes: int) -> Tensor:  # [T, E, H, 2, arms]: Gumbel, then uniform
            u = torch.rand(num_tasks, episodes, c.horizon, 2, c.arms, generator=own)
            gumbel = -torch.log(-torch.log(u[..., 0, :].clamp(min=torch.finfo(u.dtype).tiny)))
            return torch.stack([gumbel, u[..., 1, :]], dim=-2)

        return TaskBatch(p.expand(-1, c.shots, -1).contiguous(), noise(c.shots),
                         p.expand(-1, c.queries, -1).contiguous(), noise(c.queries))

    def make_model(self):
        return MLP(1, 100, 100, self.config.arms)

    def rollout(self, apply, p: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Play one task's episodes: arm probabilities ``[E, arms]``, noise ``[E, H, 2, arms]`` →
        (log π(a_t), rewards, observations), ``[E, H]``, ``[E, H]``, ``[E, H, 1]``; only the
        log-probabilities carry a gradient."""
        episodes, horizon, _, arms = noise.shape
        observations = p.new_ones(episodes, horizon, 1)
        logits = apply(observations)  # [E, H, arms]: the same at every pull (no state)
        if logits.shape[-1] != arms:
            raise ZooError(f"suite bandits: the policy must output one logit per arm ({arms}), "
                           f"got {logits.shape[-1]}")
        log_policy = F.log_softmax(logits, dim=-1)
        arm = (log_policy.detach() + noise[..., 0, :]).argmax(-1, keepdim=True)  # [E, H, 1]
        pays = noise[..., 1, :].gather(-1, arm) < p.unsqueeze(1).expand(-1, horizon, -1).gather(-1, arm)
        return log_policy.gather(-1, arm)[..., 0], pays[..., 0].to(logits.dtype), observations

    def task_loss(self, apply, x, y):
        log_prob, rewards, observations = self.rollout(apply, x, y)
        return policy_gradient_surrogate(log_prob, rewards, observations, torch.ones_like(rewards), DISCOUNT)

    def task_prediction(self, apply, x, y):
        """The return of each episode ``[E]``."""
        return self.rollout(apply, x, y)[1].sum(-1)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("bandits", Bandits, paper=PAPER,
                 summary="meta-RL: Bernoulli multi-armed bandits with random arm probabilities (played in torch)")
