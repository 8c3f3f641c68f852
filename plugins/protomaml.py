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
    """MAML from a prototype-initialised head: ``model.body`` then a linear ``model.head``."""

    Config = ProtoMAMLConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        if suite.kind != "classification":
            raise ZooError(f"protomaml sets its head from class prototypes and needs a classification "
                           f"suite, but {suite.name} is a {suite.kind} suite")
        head = getattr(model, "head", None)
        if not isinstance(getattr(model, "body", None), torch.nn.Module) or not isinstance(head, torch.nn.Linear):
            raise ZooError("protomaml needs a backbone with a submodule 'body' (the embedding) and a "
                           "linear 'head', as conv4 has")
        check_head(self, "head")
        self._ways = head.out_features

    def task_initialisation(self, x, y):
        params = dict(self.model.named_parameters())
        body = {name.removeprefix("body."): p for name, p in params.items() if name.startswith("body.")}
        z = functional_call(self.model.body, body, (x,))  # [S, D]
        members = one_hot(y, self._ways, z.dtype)  # [S, N]
        prototypes = members.T @ z / members.sum(0).clamp_min(1).unsqueeze(1)  # [N, D]
        return {**params, "head.weight": 2 * prototypes, "head.bias": -prototypes.pow(2).sum(-1)}


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("protomaml", ProtoMAML, family="model-algorithm", paper=PAPER, kinds=("classification",),
                 summary="MAML whose head starts each task at the class prototypes")
