"""Named backbones for any algorithm: ``conv4`` (max-pooling, the Omniglot suite's default),
``conv4-32`` (the same with 32 filters, MAML's mini-ImageNet network), ``conv4-strided``
(stride-2 convolutions and a spatial mean, as the MAML reference code for Omniglot),
``conv4-running-bn`` (max-pooling, batch norm with running statistics used in evaluation mode,
as the Prototypical and Matching Networks reference code), ``conv4-relation`` (max-pooling in the
first two blocks only, 7×7 feature maps of a 28×28 image: Relation Networks' embedding), and ``mlp`` (two hidden layers of 40
ReLU units, the sinusoid backbone of Finn et al. 2017). Each infers its input and output sizes from one task of the suite."""

import metazoo
import torch
from metazoo.models import MLP, Conv4


def shapes(suite) -> tuple[torch.Size, int]:
    """The shape of one example's input and the number of outputs (ways, or the target's size)."""
    task = suite.sample("train", 1, torch.Generator().manual_seed(0))
    outputs = int(task.support_y.max()) + 1 if suite.kind == "classification" else task.support_y.shape[-1]
    return task.support_x.shape[2:], outputs


def _conv4(downsample, norm="batch", hidden=64, pool_blocks=4):
    def build(suite):
        (channels, height, width), outputs = shapes(suite)
        return Conv4(in_channels=channels, out_features=outputs, hidden=hidden, image_size=min(height, width),
                     downsample=downsample, norm=norm, pool_blocks=pool_blocks)

    return build


def mlp(suite):
    (features,), outputs = shapes(suite)
    return MLP(features, 40, 40, outputs)


@metazoo.hookimpl
def zoo_register_backbones(registry):
    registry.add("conv4", _conv4("maxpool"), summary="4 × [conv 3×3, 64, batch norm, ReLU, max-pool] + linear head")
    registry.add("conv4-32", _conv4("maxpool", hidden=32),
                 summary="conv4 with 32 filters per layer (MAML's mini-ImageNet network, Finn et al. 2017 §5.2)")
    registry.add("conv4-strided", _conv4("stride"),
                 summary="4 × [conv 3×3 stride 2, 64, batch norm, ReLU], spatial mean + linear head (MAML's Omniglot)")
    registry.add("conv4-running-bn", _conv4("maxpool", "running"),
                 summary="conv4 whose batch norm keeps running statistics for evaluation mode (ProtoNet's code)")
    registry.add("conv4-relation", _conv4("maxpool", pool_blocks=2),
                 summary="conv4 max-pooling in its first two blocks only, feature maps out (Relation Networks' embedding)")
    registry.add("mlp", mlp, summary="MLP with two hidden layers of 40 ReLU units")
