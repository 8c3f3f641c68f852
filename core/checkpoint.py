"""Checkpoints of a run in progress, so that runs of hours survive being killed.

A checkpoint holds everything the training loop needs to go on as if it had never stopped: the
learner's state, the state of every optimiser the learner holds, the step, the time spent
(training, budget and compilation), the validation curve with the best state so far, and the
random number generators' states (the training batches need none: each step's batch is drawn
from a generator seeded by the run's seed and the step). It is written atomically beside the
run's record (``<record>.ckpt``), loaded with ``torch.load(weights_only=True)``, and removed
once the record is written. With a step budget, a run resumed from a checkpoint ends with the
record an uninterrupted run gives (bar its timings).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


def checkpoint_path(record: Path) -> Path:
    return Path(record).with_suffix(".ckpt")


_STATEFUL = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)


def optimizers(learner: torch.nn.Module) -> dict[str, Any]:
    """The optimisers and learning-rate schedules a learner holds as attributes."""
    return {name: value for name, value in vars(learner).items() if isinstance(value, _STATEFUL)}


def save(path: Path, key: str, learner: torch.nn.Module, loop: dict[str, Any]) -> None:
    """Write the checkpoint of run ``key`` atomically: a reader sees the old file or the new."""
    state = {
        "format": FORMAT,
        "key": key,
        "learner": learner.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers(learner).items()},
        "loop": loop,
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, key: str, learner: torch.nn.Module) -> dict[str, Any] | None:
    """Restore the learner, its optimisers and the RNGs from the checkpoint of run ``key`` and
    return the loop state; None if there is no usable checkpoint (another run's, or unreadable)."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - none yet, or a torn or foreign file: start afresh
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        return None
    learner.load_state_dict(state["learner"])
    getattr(learner, "optimizer", None)  # lazily built outer optimiser and schedule exist from here on
    getattr(learner, "scheduler", None)
    held = optimizers(learner)
    for name, saved in state["optimizers"].items():
        if name in held:
            held[name].load_state_dict(saved)
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    return state["loop"]


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples back that ``torch.save`` may give as lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
