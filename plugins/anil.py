"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020, §4).

The inner loop adapts only the head (the network's final layer); the body is meta-learnt by
the outer loop alone, with the same second-order meta-gradient as MAML.
"""

from dataclasses import dataclass

import metazoo
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, check_head

PAPER = "Raghu, Raghu, Bengio & Vinyals. Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of MAML. ICLR 2020"


@dataclass(frozen=True)
class ANILConfig(InnerLoopConfig):
    head: str = "head"  # name of the submodule that the inner loop adapts


class ANIL(ModelAlgorithmLearner):
    """MAML whose inner loop adapts only ``model.<head>``."""

    Config = ANILConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        self._head_names = check_head(self, self.config.head)

    def adapted_names(self) -> list[str]:
        return self._head_names


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("anil", ANIL, family="model-algorithm", paper=PAPER,
                 summary="MAML whose inner loop adapts only the head")
