"""Proto-MAML (Triantafillou et al., Meta-Dataset, ICLR 2020, §3.2 and Appendix).

MAML whose linear head is, at the start of each task's inner loop, set from the task's
prototypes, so that before any step the network is a Prototypical Network (Snell et al. 2017):
with c_k the mean support embedding of class k, W_k = 2 c_k and b_k = −‖c_k‖², since
−‖z − c_k‖² = 2 c_kᵀz − ‖c_k‖² − ‖z‖² and the last term is the same for every class. The inner
loop then adapts every parameter; the outer gradient flows through the prototypes. The paper
uses the first-order approximation (fo-Proto-MAML), the default here.
"""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.errors import ZooError
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, check_head
from metazoo.model_data import one_hot
from torch.func import functional_call

PAPER = ("Triantafillou et al. Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few "
         "Examples. ICLR 2020 (Proto-MAML, §3.2)")


@dataclass(frozen=True)
class ProtoMAMLConfig(InnerLoopConfig):
    first_order: bool = True  # Triantafillou et al. 2020: fo-Proto-MAML


class ProtoMAML(ModelAlgorithmLearner):
    """MAML from a prototype-initialised head: an :class:`torch.nn.Sequential` backbone whose last
    layer is a linear ``head`` (conv4: ``body`` then ``head``; the MLP)."""

    Config = ProtoMAMLConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        if suite.kind != "classification":
            raise ZooError(f"protomaml sets its head from class prototypes and needs a classification "
                           f"suite, but {suite.name} is a {suite.kind} suite")
        children = list(model.named_children())
        if not (isinstance(model, torch.nn.Sequential) and children and children[-1][0] == "head"
                and isinstance(children[-1][1], torch.nn.Linear)):
            raise ZooError("protomaml needs an nn.Sequential backbone whose last layer is a linear "
                           "'head' (as conv4 and the MLP are)")
        check_head(self, "head")
        self._layers = children[:-1]
        self._ways = children[-1][1].out_features

    def task_initialisation(self, x, y):
        params = dict(self.model.named_parameters())
        z = x
        for name, layer in self._layers:  # the embedding: every layer before the head
            own = {key.removeprefix(name + "."): p for key, p in params.items() if key.startswith(name + ".")}
            z = functional_call(layer, own, (z,))  # -> [S, D]
        members = one_hot(y, self._ways, z.dtype)  # [S, N]
        prototypes = members.T @ z / members.sum(0).clamp_min(1).unsqueeze(1)  # [N, D]
        return {**params, "head.weight": 2 * prototypes, "head.bias": -prototypes.pow(2).sum(-1)}


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("protomaml", ProtoMAML, family="model-algorithm", paper=PAPER, kinds=("classification",),
                 summary="MAML whose head starts each task at the class prototypes")
