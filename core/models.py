"""Backbones of the built-in suites. Each names its final layer ``head`` (ANIL adapts it)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


class MLP(nn.Sequential):
    """Fully connected ReLU network: ``sizes[0] → … → sizes[-1]``; the last layer is ``head``.

    The sinusoid backbone of Finn et al. (2017, §5.1) is ``MLP(1, 40, 40, 1)``.
    """

    def __init__(self, *sizes: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-2], sizes[1:-1])):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            layers[f"relu{i}"] = nn.ReLU()
        layers["head"] = nn.Linear(sizes[-2], sizes[-1])
        super().__init__(layers)


class BatchStatNorm(nn.Module):
    """Batch normalisation on the current batch's statistics, always: no running statistics,
    the same in training and evaluation (transductive, as in the MAML reference code).

    Inside a meta-learner a "batch" is one task's examples, so each task is normalised by its
    own statistics. Written with plain tensor ops rather than ``F.batch_norm``: under
    ``torch.vmap`` the native kernel gives a wrong second-order meta-gradient (relative error
    1e-3 to 8e-3 against a per-task loop in float64, measured with torch 2.11 and 2.13), while
    these ops match the loop to 1e-15.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))  # γ, per channel
        self.bias = nn.Parameter(torch.zeros(channels))  # β, per channel

    def forward(self, x: Tensor) -> Tensor:  # [N, C, *spatial] -> [N, C, *spatial]
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        mean = x.mean(dims, keepdim=True)  # [1, C, 1, ...]
        var = x.var(dims, correction=0, keepdim=True)  # biased, as batch norm normalises
        shape = (1, -1) + (1,) * (x.dim() - 2)
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return normed * self.weight.view(shape) + self.bias.view(shape)


class RunningBatchNorm(nn.Module):
    """Batch normalisation with running statistics, as :class:`torch.nn.BatchNorm2d`: in training
    mode a batch is normalised by its own statistics, which also update exponential running
    averages (``momentum``; the variance unbiased); in evaluation mode every batch is normalised
    by the running averages. The normalisation of the Prototypical Networks and Matching Networks
    reference code (``model.eval()`` at test time).

    Plain tensor ops as :class:`BatchStatNorm`. The running averages are updated in place, once
    per forward pass, so a learner runs such a model task by task (``execution = "loop"``): under
    ``torch.vmap`` each task would need a copy of its own (:func:`metazoo.engine.choose_execution`).
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))  # γ, per channel
        self.bias = nn.Parameter(torch.zeros(channels))  # β, per channel
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:  # [N, C, *spatial] -> [N, C, *spatial]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0, *range(2, x.dim())]  # every dimension but the channels
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, correction=0, keepdim=True)
            with torch.no_grad():
                count = x.numel() // x.shape[1]
                unbiased = var.flatten() * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean.flatten(), self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return normed * self.weight.view(shape) + self.bias.view(shape)


def has_running_statistics(model: nn.Module) -> bool:
    """Whether a forward pass in training mode updates state of ``model`` in place (batch norm
    with running statistics, ours or torch's)."""
    return any(getattr(m, "running_mean", None) is not None for m in model.modules())


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` has a convolution layer (which decides how its tasks are best run on a
    CPU: :func:`metazoo.engine.choose_execution`, ``PooledMetaLearner.compiles``)."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


class Conv4(nn.Sequential):
    """The conv4 backbone of few-shot image classification: ``body`` then a linear ``head``.

    ``body`` is 4 × [3×3 convolution with ``hidden`` filters (padding 1), :class:`BatchStatNorm`,
    ReLU, 2×2 max-pooling], flattened: the embedding network of Vinyals et al. (NeurIPS 2016,
    §4.1), which Finn et al. (ICML 2017, §5.2) and Snell et al. (NeurIPS 2017) also use. It
    downsamples by 2×2 max-pooling (``downsample="maxpool"``): a 28×28 image shrinks
    28 → 14 → 7 → 3 → 1, so ``head`` sees ``hidden · (image_size // 16)²`` features. The MAML
    reference code for Omniglot downsamples by stride-2 convolutions instead and averages the
    last feature map over space (``downsample="stride"``: 28 → 14 → 7 → 4 → 2, then the spatial
    mean; ``head`` sees ``hidden`` features). ``pool_blocks`` max-pools in the first blocks only:
    Sung et al. (CVPR 2018, §3.4) pool in the first two, so their relation module compares 7×7
    feature maps of a 28×28 image. Model-data learners use ``body`` as the embedding.

    ``norm="batch"`` normalises every batch by its own statistics, in training and at test
    (:class:`BatchStatNorm`, the MAML reference code's); ``norm="running"`` keeps running
    statistics for evaluation mode (:class:`RunningBatchNorm`, the Prototypical and Matching
    Networks reference code's).
    """

    def __init__(
        self, in_channels: int = 1, out_features: int = 5, hidden: int = 64, image_size: int = 28,
        downsample: str = "maxpool", norm: str = "batch", pool_blocks: int = 4,
    ) -> None:
        if downsample not in ("maxpool", "stride"):
            raise ValueError(f"downsample must be 'maxpool' or 'stride', got {downsample!r}")
        if norm not in ("batch", "running"):
            raise ValueError(f"norm must be 'batch' or 'running', got {norm!r}")
        if not 0 <= pool_blocks <= 4 or (pool_blocks != 4 and downsample != "maxpool"):
            raise ValueError(f"pool_blocks must be 0 to 4 with downsample='maxpool', got {pool_blocks}")
        normalisation = BatchStatNorm if norm == "batch" else RunningBatchNorm
        # After pool_blocks floor-halvings, or the spatial mean.
        side = image_size // 2**pool_blocks if downsample == "maxpool" else 1
        if image_size < 16:
            raise ValueError(f"Conv4 needs images of at least 16×16 pixels, got {image_size}")
        stride = 2 if downsample == "stride" else 1
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(4):
            layers = OrderedDict(
                conv=nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=stride, padding=1),
                norm=normalisation(hidden),
                relu=nn.ReLU(),
            )
            if downsample == "maxpool" and i < pool_blocks:
                layers["pool"] = nn.MaxPool2d(2)  # [N, hidden, s, s] -> [N, hidden, s // 2, s // 2]
            blocks[f"block{i}"] = nn.Sequential(layers)
        if downsample == "stride":
            blocks["mean"] = SpatialMean()  # [N, hidden, s, s] -> [N, hidden]
        else:
            blocks["flatten"] = nn.Flatten()  # [N, hidden, s, s] -> [N, hidden · s²]
        super().__init__(
            OrderedDict(
                body=nn.Sequential(blocks),  # [N, C, H, W] -> [N, hidden · side²]
                head=nn.Linear(hidden * side * side, out_features),  # -> [N, out_features]
            )
        )


class SpatialMean(nn.Module):
    """``[N, C, H, W] -> [N, C]``: the mean over the spatial dimensions."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))
