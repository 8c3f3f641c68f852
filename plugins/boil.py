"""BOIL: Body Only update in Inner Loop (Oh, Yoo, Kim & Yun, ICLR 2021, §3).

The mirror image of ANIL: the inner loop adapts the body (every layer but the head) and leaves
the head at its meta-learnt value, so adaptation must change the representation; the outer
loop meta-learns both, with MAML's second-order meta-gradient. The paper keeps MAML's other
settings, which are this learner's defaults and the specs'.
"""

from dataclasses import dataclass

import metazoo
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, check_head

PAPER = "Oh, Yoo, Kim & Yun. BOIL: Towards Representation Change for Few-shot Learning. ICLR 2021"


@dataclass(frozen=True)
class BOILConfig(InnerLoopConfig):
    head: str = "head"  # name of the submodule that the inner loop leaves alone


class BOIL(ModelAlgorithmLearner):
    """MAML whose inner loop adapts everything but ``model.<head>``."""

    Config = BOILConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        head = set(check_head(self, self.config.head))
        self._body_names = [name for name, _ in model.named_parameters() if name not in head]

    def adapted_names(self) -> list[str]:
        return self._body_names


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("boil", BOIL, family="model-algorithm", paper=PAPER,
                 summary="MAML whose inner loop adapts only the body (the head stays put)")
