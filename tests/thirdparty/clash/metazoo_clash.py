"""A third-party plugin that takes a name metazoo already has: registration must fail loudly."""

import metazoo


class OtherMAML(metazoo.ModelAlgorithmLearner):
    """Same algorithm, same name: a clash."""


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("maml", OtherMAML, family="model-algorithm")
