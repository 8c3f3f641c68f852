"""Sinusoid regression (Finn, Abbeel & Levine, ICML 2017, §5.1).

Each task is y = A·sin(x − φ) with amplitude A ~ U[0.1, 5] and phase φ ~ U[0, π]; inputs
x ~ U[−5, 5]. K support points and a number of query points per task; mean squared error;
backbone MLP 1-40-40-1 with ReLU. All splits share the task distribution (as in the paper);
they differ only by the random stream they are drawn from.
"""

import math
from dataclasses import dataclass

import metazoo
import torch
from metazoo.config import build_config, positive
from metazoo.models import MLP
from metazoo.tasks import TaskBatch, TaskSuite, split_stream

PAPER = "Finn, Abbeel & Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017, §5.1"


@dataclass(frozen=True)
class SinusoidConfig:
    shots: int = 5  # K support points per task
    queries: int = 10  # query points per task
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self) -> None:
        positive(self, "shots", "queries")


class Sinusoid(TaskSuite):
    name = "sinusoid"
    kind = "regression"

    def __init__(self, **protocol):
        self.config = build_config(SinusoidConfig, protocol, "suite sinusoid")

    def sample(self, split, num_tasks, generator):
        generator = split_stream(generator, split)  # the splits' tasks differ, for one generator state
        c = self.config
        points = c.shots + c.queries

        def uniform(low_high, *shape):
            low, high = low_high
            return low + (high - low) * torch.rand(*shape, generator=generator)

        amplitude = uniform(c.amplitude, num_tasks, 1, 1)  # [T, 1, 1]
        phase = uniform(c.phase, num_tasks, 1, 1)
        x = uniform(c.x_range, num_tasks, points, 1)  # [T, K+Q, 1]
        y = amplitude * torch.sin(x - phase)
        return TaskBatch(x[:, : c.shots], y[:, : c.shots], x[:, c.shots :], y[:, c.shots :])

    def make_model(self):
        return MLP(1, 40, 40, 1)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("sinusoid", Sinusoid, paper=PAPER,
                 summary="regression of sine waves with random amplitude and phase")
