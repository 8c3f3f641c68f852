"""MAML: Model-Agnostic Meta-Learning, second order (Finn, Abbeel & Levine, ICML 2017).

The inner loop is Eq. (1), θ'_i = θ − α∇_θ L_Ti(f_θ), and the outer update Eq. (3),
θ ← θ − β∇_θ Σ_i L_Ti(f_θ'_i), differentiates through the inner loop. Both are the defaults of
:class:`metazoo.ModelAlgorithmLearner`; this plugin only names them.
"""

import metazoo
from metazoo.model_algorithm import ModelAlgorithmLearner

PAPER = "Finn, Abbeel & Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017"


class MAML(ModelAlgorithmLearner):
    """Second-order MAML (the base class's inner loop and meta-gradient, unchanged)."""


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("maml", MAML, family="model-algorithm", paper=PAPER,
                 summary="second-order MAML: learn an initialisation for gradient descent")
