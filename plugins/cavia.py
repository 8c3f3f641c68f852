"""CAVIA: fast context adaptation (Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, ICML 2019).

The network's weights θ are shared by all tasks and meta-learnt in the outer loop only; each task
adapts a context vector φ alone, which starts at zero for every task (it is not meta-learnt):
φ_i = φ_0 − α ∇_φ L_support(f_{φ_0, θ}) with φ_0 = 0 (``inner_steps`` such steps), and
θ ← θ − β ∇_θ Σ_i L_query(f_{φ_i, θ}), differentiated through the inner loop (the paper's method
section; second order, ``first_order`` drops those terms). The engine does this through
:meth:`adapted_names` (``["context"]``) and :meth:`task_initialisation` (φ = 0).

How the context enters a built-in backbone (:class:`ContextNetwork`):

- a fully connected network (an ``nn.Sequential`` whose first layer is ``nn.Linear``, as the
  ``mlp``): φ is concatenated to the input (the paper's sine-curve regression). Concatenation is computed
  as W_x x + W_φ φ + b in the first layer: ``context_weight`` is W_φ, initialised as a PyTorch
  linear layer of n_in + |φ| inputs would initialise those columns;
- a convolutional network (an ``nn.Sequential`` of ``nn.Sequential`` blocks with at least
  ``film_layer`` convolutions, as ``conv4``, ``conv4-strided``, ``conv4-running-bn``): FiLM
  (Perez et al. 2018) on the feature maps of convolution number ``film_layer``, after its batch
  norm and before its ReLU, h ← γ ⊙ h + β with (γ, β) = W φ + b per channel (the paper's mini-ImageNet
  classification: the third convolution; the reference code's ``context_in = [F, F, T, F, F]``, which FiLMs after
  the batch norm and the max-pooling: the same for γ ≥ 0). W starts as the reference code's
  (Kaiming-uniform, gain 1); the bias starts at γ = 1, β = 0, so that before adaptation the
  network is the backbone itself (the reference code leaves PyTorch's default bias, γ ≈ U(±0.1);
  the paper states none).

Any other backbone is refused with a :class:`ZooError`. Defaults, by the suite's kind: regression
|φ| = 5 and one inner step (the sine-curve experiment; the reference code's defaults),
classification |φ| = 100 and two inner steps (the mini-ImageNet experiment); inner rate α = 1.0 in both (the reference code's
``lr_inner``). Not applied: the reference code clips each meta-gradient entry to [−10, 10].
``execution = "auto"`` takes the per-task loop for a convolutional backbone on a CPU, as for MAML,
although the weights are shared: measured on conv4 (64 filters, 8 tasks of 5-way 1-shot, 15
queries, second order) a meta-gradient took 1.7–2.1 s looped and 5.0–8.5 s under ``vmap``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import metazoo
import torch
from metazoo.config import positive
from metazoo.errors import ZooError
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner
from metazoo.models import BatchStatNorm, RunningBatchNorm
from torch import Tensor, nn

PAPER = ("Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson. Fast Context Adaptation via Meta-Learning. "
         "ICML 2019")
#: Paper defaults by the suite's kind: (context size, inner steps); reinforcement learning: the
#: reference code's 2D-navigation arguments (2 context parameters, 1 inner step).
DEFAULTS = {"regression": (5, 1), "classification": (100, 2), "reinforcement": (2, 1)}
NORMS = (BatchStatNorm, RunningBatchNorm, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class CAVIAConfig(InnerLoopConfig):
    inner_lr: float = 1.0  # α for the context (both experiments; the reference code's lr_inner)
    inner_steps: int | None = None  # None: 1 for regression, 2 for classification
    context_size: int | None = None  # |φ|; None: 5 for regression, 100 for classification
    film_layer: int = 3  # convolutional backbones: FiLM after this convolution (1 = the first)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "context_size", "film_layer")


class ContextNetwork(nn.Module):
    """``backbone`` conditioned on a context vector, the buffer ``context`` (zeros: the network
    before adaptation; ``torch.func.functional_call`` swaps in a task's φ).

    ``path`` names the layer after which the context enters, through nested ``nn.Sequential``
    containers; ``mode`` is ``"input"`` (add W_φ φ to that linear layer's output: concatenation
    to its input) or ``"film"`` (γ ⊙ h + β on the channels of its output).
    """

    def __init__(self, backbone: nn.Sequential, size: int, path: tuple[str, ...], mode: str,
                 features: int, inputs: int = 0) -> None:
        super().__init__()
        like = next(backbone.parameters())
        self.backbone = backbone
        self.path, self.mode = path, mode
        self.register_buffer("context", torch.zeros(size, dtype=like.dtype, device=like.device), persistent=False)
        if mode == "input":
            self.context_weight = nn.Linear(size, features, bias=False, dtype=like.dtype, device=like.device)
            bound = (inputs + size) ** -0.5  # nn.Linear's bound for a layer of inputs + size inputs
            nn.init.uniform_(self.context_weight.weight, -bound, bound)
        else:
            self.film = nn.Linear(size, 2 * features, dtype=like.dtype, device=like.device)
            nn.init.kaiming_uniform_(self.film.weight, nonlinearity="linear")
            with torch.no_grad():
                self.film.bias.copy_(torch.cat([torch.ones(features), torch.zeros(features)]))

    def forward(self, x: Tensor) -> Tensor:
        return self._through(self.backbone, x, self.path)

    def _through(self, sequential: nn.Sequential, x: Tensor, path: tuple[str, ...]) -> Tensor:
        """``sequential(x)``, with the context applied after the layer at ``path`` inside it."""
        for name, child in sequential.named_children():
            if name != path[0]:
                x = child(x)
            elif len(path) > 1:
                x = self._through(child, x, path[1:])
            else:
                x = self._condition(child(x))
        return x

    def _condition(self, h: Tensor) -> Tensor:
        if self.mode == "input":  # [N, F] + [F]
            return h + self.context_weight(self.context)
        gamma, beta = self.film(self.context).chunk(2)  # [C], [C]
        shape = (1, -1) + (1,) * (h.dim() - 2)
        return gamma.view(shape) * h + beta.view(shape)  # [N, C, H, W]


def leaves(model: nn.Module, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], nn.Module]]:
    """The layers of ``model`` in the order an ``nn.Sequential`` runs them, with their paths
    (only ``nn.Sequential`` containers are opened)."""
    found = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            found += leaves(child, (*prefix, name))
        else:
            found.append(((*prefix, name), child))
    return found


def locate(model: nn.Module, film_layer: int) -> tuple[tuple[str, ...], str, int, int]:
    """(path, mode, features, inputs) of where the context enters ``model``, or a ZooError."""
    layers = leaves(model) if isinstance(model, nn.Sequential) else []
    if layers and isinstance(layers[0][1], nn.Linear):
        path, first = layers[0]
        return path, "input", first.out_features, first.in_features
    convs = [i for i, (_, layer) in enumerate(layers) if isinstance(layer, nn.modules.conv._ConvNd)]
    if len(convs) >= film_layer:
        at = convs[film_layer - 1]
        channels = layers[at][1].out_channels
        if at + 1 < len(layers) and isinstance(layers[at + 1][1], NORMS):
            at += 1  # FiLM after the convolution's batch norm
        return layers[at][0], "film", channels, 0
    if convs:
        raise ZooError(f"cavia: film_layer = {film_layer}, but the backbone has only {len(convs)} "
                       "convolution(s) reachable through nn.Sequential containers")
    raise ZooError(
        f"cavia cannot condition a {type(model).__name__} on its context: it takes an nn.Sequential "
        "whose first layer is nn.Linear (the context is concatenated to the input, as the 'mlp' "
        "backbone) or one with convolutions inside nn.Sequential blocks (FiLM after convolution "
        "number film_layer, as 'conv4', 'conv4-strided', 'conv4-running-bn')")


class CAVIA(ModelAlgorithmLearner):
    """Adapt a context vector per task; meta-learn the network around it."""

    Config = CAVIAConfig
    config: CAVIAConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        size, steps = DEFAULTS[suite.kind]
        config = self.config
        self.config = config = dataclasses.replace(config, context_size=config.context_size or size,
                                                   inner_steps=config.inner_steps or steps)
        path, mode, features, inputs = locate(model, config.film_layer)
        self.model = ContextNetwork(model, config.context_size, path, mode, features, inputs)

    def adapted_names(self) -> list[str]:
        return ["context"]

    def task_initialisation(self, x, y):
        """The shared weights θ and φ_0 = 0 (a constant: the context is not meta-learnt)."""
        return {**dict(self.model.named_parameters()), "context": torch.zeros_like(self.model.context)}

    def eager_inner_loop(self, execution: str) -> bool:
        """Plain autograd in the per-task loop, as MAML's: the adapted context starts at a
        constant, not at a function of the meta-parameters, so autograd's gradient in it is the
        partial derivative the inner loop needs. (It is also what lets batch norm update its
        running statistics in place, which ``torch.func.vjp`` refuses.)"""
        return execution == "loop" and not self.__dict__.get("_functional")


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("cavia", CAVIA, family="model-algorithm", paper=PAPER,
                 summary="adapt only a context vector per task (input or FiLM); meta-learn the network")
