"""Hyperplanes: random linear classification tasks in R^d (a data-free classification suite).

Each task is a random hyperplane through the origin, normal w ~ uniform on the unit sphere;
points x ~ N(0, I_d) are labelled by the side they fall on, 1 if w·x > 0 else 0. Each class gets
exactly ``shots`` support and ``queries`` query points: a point drawn on the wrong side is
reflected across the hyperplane, which keeps the Gaussian distribution of each half-space.
Backbone Linear(10, 5)-ReLU-Linear(5, 2); cross-entropy; accuracy.
"""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.config import build_config, positive
from metazoo.models import MLP
from metazoo.tasks import TaskBatch, TaskSuite, split_stream


@dataclass(frozen=True)
class HyperplanesConfig:
    shots: int = 5  # support points per class
    queries: int = 15  # query points per class
    dim: int = 10

    def __post_init__(self) -> None:
        positive(self, "shots", "queries", "dim")


class Hyperplanes(TaskSuite):
    name = "hyperplanes"
    kind = "classification"
    ways = 2

    def __init__(self, **protocol):
        self.config = build_config(HyperplanesConfig, protocol, "suite hyperplanes")

    def sample(self, split, num_tasks, generator):
        generator = split_stream(generator, split)  # the splits never share tasks
        c = self.config
        normal = torch.randn(num_tasks, 1, c.dim, generator=generator)
        normal = normal / normal.norm(dim=-1, keepdim=True)  # [T, 1, d]

        def points(per_class):
            labels = torch.arange(2).repeat_interleave(per_class).expand(num_tasks, -1)  # [T, 2n]
            x = torch.randn(num_tasks, 2 * per_class, c.dim, generator=generator)
            side = (x * normal).sum(-1, keepdim=True)  # [T, 2n, 1]
            wrong = (side > 0) != labels.unsqueeze(-1).bool()
            x = torch.where(wrong, x - 2 * side * normal, x)
            order = torch.rand(num_tasks, 2 * per_class, generator=generator).argsort(dim=1)
            return x.gather(1, order.unsqueeze(-1).expand_as(x)), labels.gather(1, order)

        support_x, support_y = points(c.shots)
        query_x, query_y = points(c.queries)
        return TaskBatch(support_x, support_y, query_x, query_y)

    def make_model(self):
        return MLP(self.config.dim, 5, 2)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("hyperplanes", Hyperplanes,
                 summary="2-way classification by a random hyperplane in R^10 (no data needed)")
