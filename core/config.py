"""Typed hyperparameter dataclasses and their checked construction from user input."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from metazoo.errors import ZooError


@dataclass(frozen=True)
class LearnerConfig:
    """Hyperparameters every meta-learner has."""

    meta_batch: int = 25  # tasks per outer update
    outer_lr: float = 1e-3  # outer (meta) learning rate
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    # Schedule of the outer rate: "step" multiplies it by lr_gamma every lr_step_every outer
    # steps (Prototypical Networks halve it every 2000 episodes); "cosine" and "linear" anneal it
    # to 0 over lr_anneal_steps outer steps (Reptile anneals its outer step size linearly).
    lr_schedule: Literal["constant", "step", "cosine", "linear"] = "constant"
    lr_step_every: int = 2000
    lr_gamma: float = 0.5
    lr_anneal_steps: int | None = None

    def __post_init__(self) -> None:
        positive(self, "meta_batch", "outer_lr", "lr_step_every", "lr_gamma", "lr_anneal_steps")
        if self.lr_schedule in ("cosine", "linear") and self.lr_anneal_steps is None:
            raise ZooError(f"lr_schedule {self.lr_schedule!r} needs lr_anneal_steps (the outer steps to anneal over)")


#: Hyperparameters that change how a step is executed, not what it computes (up to rounding):
#: left out of run keys and of leaderboard rows, like the device and the thread count.
EXECUTION_SETTINGS = ("chunk_size", "execution", "compile")


@dataclass(frozen=True)
class PooledConfig(LearnerConfig):
    """Hyperparameters of a learner whose outer step pools per-task gradients."""

    chunk_size: int | None = None  # tasks per chunk of the meta-batch (default: all at once)
    execution: Literal["auto", "vmap", "loop"] = "auto"  # see metazoo.engine
    # compile the whole outer step (see metazoo.learner.PooledMetaLearner); "auto": where it pays
    compile: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "chunk_size")


def positive(config: Any, *names: str) -> None:
    """Raise a :class:`ZooError` naming the first of ``names`` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ZooError(f"{name} must be > 0, got {value!r}")


def build_config(cls: type, values: dict[str, Any], owner: str) -> Any:
    """``cls(**values)`` with clear errors for unknown keys and wrong types.

    ``owner`` names what the hyperparameters belong to, for the message.
    """
    accepted = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ZooError(
            f"{owner}: unknown setting {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    missing = sorted(name for name, f in accepted.items() if name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ZooError(f"{owner}: missing setting {', '.join(map(repr, missing))} (required)")
    hints = typing.get_type_hints(cls)
    checked = {key: _check_type(owner, key, value, hints[key]) for key, value in values.items()}
    try:
        return cls(**checked)
    except ZooError as exc:
        raise ZooError(f"{owner}: {exc}") from None


def _check_type(owner: str, key: str, value: Any, hint: Any) -> Any:
    options = _options(hint)
    for option in options:
        if option is type(None) and value is None:
            return value
        if isinstance(option, tuple):  # Literal choices
            if value in option:
                return value
        elif option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif option in (int, str, bool) and type(value) is option:
            return value
        elif typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            items = typing.get_args(option)
            if len(items) == len(value):
                return tuple(_check_type(owner, key, v, t) for v, t in zip(value, items))
    wanted = " or ".join(
        "one of " + ", ".join(map(repr, o)) if isinstance(o, tuple) else str(o).replace("<class '", "").replace("'>", "")
        for o in options
    )
    raise ZooError(f"{owner}: {key} must be {wanted}, got {value!r}")


def _options(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return [typing.get_args(hint)]
    if origin in (typing.Union, types.UnionType):
        return [o for arg in typing.get_args(hint) for o in _options(arg)]
    return [hint]
