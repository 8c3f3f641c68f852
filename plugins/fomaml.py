"""First-order MAML (Finn, Abbeel & Levine, ICML 2017, §5.2): the meta-gradient of Eq. (3)
with the second derivatives through the inner loop dropped, i.e. the query-loss gradient at the
adapted parameters θ'_i is applied to θ."""

from dataclasses import dataclass

import metazoo
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner

PAPER = "Finn, Abbeel & Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017 (first-order approximation, §5.2)"


@dataclass(frozen=True)
class FOMAMLConfig(InnerLoopConfig):
    first_order: bool = True


class FOMAML(ModelAlgorithmLearner):
    """MAML without second-order terms."""

    Config = FOMAMLConfig


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("fomaml", FOMAML, family="model-algorithm", paper=PAPER,
                 summary="first-order MAML: no second derivatives through the inner loop")
