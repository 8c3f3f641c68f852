"""Faulty metazoo algorithms for the harness's fault tests.

- ``raiser`` raises in its inner update;
- ``nanmaker`` steps its inner loop by an infinite learning rate, so its loss becomes NaN;
- ``mortal`` is plain MAML, except that the first process to reach step ``at_step`` of a run
  creates the file ``marker``, writes its pid there and sleeps (up to 5 minutes) to be killed;
  a retry of the run finds the marker and trains normally.
"""

import os
import time
from dataclasses import dataclass

import metazoo


class Raiser(metazoo.ModelAlgorithmLearner):
    def inner_update(self, params, grads, step):
        raise RuntimeError("faulty plugin: the inner update exploded")


class NaNMaker(metazoo.ModelAlgorithmLearner):
    def inner_update(self, params, grads, step):
        return {n: p - float("inf") * grads[n] for n, p in params.items()}


@dataclass(frozen=True)
class MortalConfig(metazoo.InnerLoopConfig):
    marker: str = ""
    at_step: int = 2


class Mortal(metazoo.ModelAlgorithmLearner):
    Config = MortalConfig

    def meta_train_step(self, batch):
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == self.config.at_step and self.config.marker:
            try:
                fd = os.open(self.config.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(300)  # until the test kills this process
        return super().meta_train_step(batch)


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("raiser", Raiser, family="model-algorithm")
    registry.add("nanmaker", NaNMaker, family="model-algorithm")
    registry.add("mortal", Mortal, family="model-algorithm")
