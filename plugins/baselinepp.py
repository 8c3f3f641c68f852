"""Baseline++ (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification", ICLR
2019, §3.2): :mod:`Baseline <metazoo.plugins.baseline>` with a cosine-similarity classifier.

The classifier's weight matrix holds one vector w_j per class; a class's score is the cosine
similarity between the embedding and w_j, scaled, and the softmax of the scores gives the class
probabilities (§3.2), which reduces intra-class variation: every class is a direction. As the
authors' code (``backbone.distLinear``) computes it, the logit of class j is

    s · g_j · cos(f_θ(x), v_j),      cos(z, v) = ẑ · v / ‖v‖,  ẑ = z / (‖z‖ + 10⁻⁵),

with w_j = g_j v_j/‖v_j‖ in weight normalisation (Salimans & Kingma 2016): g_j is a class-wise
learnable norm, starting at ‖v_j‖ (the issues #4 and #8 of the authors' repository explain that
it is there by design of the code rather than of the paper's text; ``class_norm = false`` drops
it for the plain s·cos of the text), and s a fixed scale, 2 for at most 200 classes, else 10
("in omniglot, a larger scale factor is required to handle >1000 output classes"): 10 for the
pre-training classifier over Omniglot's training classes, 2 for a 5- or 20-way head at test.
The same classifier, new for each task, is the head fitted at test time (§3.2), with
Baseline's fine-tuning settings. v_j starts as ``torch.nn.Linear(D, N, bias=False)``'s weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import metazoo
import torch
from metazoo.plugins.baseline import Baseline, BaselineConfig, Params, uniform
from torch import Tensor

PAPER = ("Chen, Liu, Kira, Wang & Huang. A Closer Look at Few-shot Classification. ICLR 2019 "
         "(Baseline++, §3.2)")
EPS = 1e-5  # added to the embedding's norm (the authors' code)


@dataclass(frozen=True)
class BaselinePPConfig(BaselineConfig):
    # s; None: the authors' code's rule, 2 for at most 200 classes (a task's head), else 10
    scale: float | None = None
    class_norm: bool = True  # a learnable norm g_j per class (weight normalisation, the authors' code)

    def __post_init__(self) -> None:
        super().__post_init__()
        metazoo.positive(self, "scale")


def reference_scale(classes: int) -> float:
    """The authors' fixed scale s for a classifier over ``classes`` classes: 2, or 10 beyond 200."""
    return 2.0 if classes <= 200 else 10.0


def cosine_logits(params: Params, z: Tensor, scale: float) -> Tensor:
    """``s · g_j · cos(z, v_j)``: logits ``[..., B, N]`` of embeddings ``z [..., B, D]`` by the
    class directions ``direction`` (v, ``[..., N, D]``) and, where given, the class norms
    ``norm`` (g, ``[..., N]``)."""
    unit = z / (z.norm(dim=-1, keepdim=True) + EPS)
    direction = params["direction"]
    cosine = unit @ (direction / direction.norm(dim=-1, keepdim=True)).transpose(-1, -2)
    if "norm" in params:
        cosine = cosine * params["norm"].unsqueeze(-2)
    return scale * cosine


class BaselinePP(Baseline):
    """Baseline with a scaled cosine-similarity classifier, in pre-training and at test."""

    Config = BaselinePPConfig
    config: BaselinePPConfig

    def init_head(self, classes: int, dim: int, generator: torch.Generator | None = None) -> Params:
        """v as ``torch.nn.Linear(dim, classes, bias=False)``'s weights; g = ‖v_j‖, as weight
        normalisation starts."""
        direction = uniform((classes, dim), 1 / math.sqrt(dim), generator)
        return {"direction": direction, "norm": direction.norm(dim=-1)} if self.config.class_norm \
            else {"direction": direction}

    def init_classifier(self, classes: int, dim: int) -> Params:
        return self.init_head(classes, dim)

    def head_logits(self, params: Params, z: Tensor) -> Tensor:
        classes = params["direction"].shape[-2]
        scale = self.config.scale if self.config.scale is not None else reference_scale(classes)
        return cosine_logits(params, z, scale)


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("baselinepp", BaselinePP, family="model-data", paper=PAPER,
                 summary="Baseline with a scaled cosine classifier (class-wise learnt norms) in training and at test")
