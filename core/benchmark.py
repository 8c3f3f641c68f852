"""Benchmark specs: a suite, its protocol, the evaluation and training budget, per-algorithm
hyperparameters and published numbers, read from TOML and checked before anything runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from metazoo.config import build_config, positive
from metazoo.errors import UsageError, ZooError
from metazoo.evaluation import TASK_SAMPLING


@dataclass(frozen=True)
class Evaluation:
    """How runs are validated and tested. Task ``i`` of the val and test lists depends only on
    the protocol, ``eval_seed`` and ``i`` (see :mod:`metazoo.evaluation`), so every algorithm and
    training seed of a benchmark meets the identical list (paired comparisons)."""

    test_tasks: int = 600
    val_tasks: int = 100
    eval_seed: int = 20170306  # seeds the val and test task streams
    batch_tasks: int = 100  # tasks per predict call (memory bound, not a result setting)
    # Inner-step counts at which a model-algorithm learner's tested state is evaluated again on
    # the same test tasks, after the test itself (0: the meta-learnt initialisation unadapted).
    adaptation_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        positive(self, "test_tasks", "val_tasks", "batch_tasks")
        steps = self.adaptation_steps
        if not isinstance(steps, list | tuple) or not all(type(k) is int and k >= 0 for k in steps) \
                or len(set(steps)) != len(steps):
            raise ZooError("adaptation_steps must be a list of distinct whole numbers of inner steps, each >= 0 "
                           f"(0: the initialisation unadapted), such as [0, 1, 3]; got {steps!r}")
        object.__setattr__(self, "adaptation_steps", tuple(sorted(steps)))


DEFAULT_STEPS = 1000


@dataclass(frozen=True)
class Training:
    """The meta-training budget: ``steps`` outer updates, or ``time`` seconds, whichever comes
    first; give one of them for a budget of that alone. With neither: 1000 steps."""

    steps: int | None = None
    time: float | None = None  # seconds of meta-training, task sampling included, validation excluded
    val_every: int | None = 250  # validate every this many steps, and at the end
    val_every_s: float | None = None  # or every this many seconds of meta-training
    # What `time` and `val_every_s` count: "wall" seconds, or "cpu" seconds of this process
    # (all threads), which other jobs on a shared machine do not eat into.
    clock: Literal["wall", "cpu"] = "wall"

    def __post_init__(self) -> None:
        positive(self, "steps", "time", "val_every", "val_every_s")
        if self.steps is None and self.time is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)


@dataclass(frozen=True)
class Published:
    """A number reported in a paper for this benchmark's setting."""

    value: float
    citation: str
    ci: float | None = None  # ± of the paper's 95% confidence interval, where given
    steps: int | None = None  # outer steps the paper meta-trained for, where it says
    note: str = ""
    # The paper's value after k inner steps, {"k": value}, for the table of adaptation steps.
    by_adaptation_steps: dict[str, float] | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    suite: str
    description: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)
    evaluation: Evaluation = Evaluation()
    training: Training = Training()
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)  # hyperparameters
    # Per algorithm, protocol settings that differ in meta-training (its paper's training
    # protocol: ProtoNet trains 60-way, MAML with one query per class); tests use `protocol`.
    training_protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    backbone: str | None = None  # a registered backbone for every algorithm (default: the suite's own)
    published: dict[str, Published] = field(default_factory=dict)
    # Validation scores whose time to reach the leaderboard reports (metazoo.milestones).
    milestones: tuple[float, ...] = ()
    source: str = "<built-in defaults>"
    overridden: str = ""  # the command-line options that changed the protocol, for messages

    def with_overrides(self, protocol: dict[str, Any], training: dict[str, Any]) -> Benchmark:
        """A copy with some protocol settings or budget replaced. A changed protocol renames
        the benchmark (``sinusoid`` → ``sinusoid-shots10``) and drops published numbers that
        were for the original protocol."""
        changed = {k: v for k, v in protocol.items() if self.protocol.get(k) != v}
        options = " ".join(f"--{k} {v}" for k, v in protocol.items())
        name = self.name + "".join(f"-{k}{v}" for k, v in sorted(changed.items()))
        new_training = build_config(
            Training, {**dataclasses.asdict(self.training), **training}, f"{self.source} [training]"
        )
        return dataclasses.replace(
            self,
            name=name,
            protocol={**self.protocol, **protocol},
            training=new_training,
            published={} if changed else self.published,
            overridden=" ".join(filter(None, (self.overridden, options))),
        )

    def training_benchmark(self, algorithm: str) -> Benchmark:
        """This benchmark with ``algorithm``'s training protocol in place of the protocol (the
        benchmark itself if it has none): what the algorithm meta-trains on."""
        changes = self.training_protocols.get(algorithm)
        if not changes:
            return self
        return dataclasses.replace(self, protocol={**self.protocol, **changes},
                                   source=f"{self.source} [training_protocol.{algorithm}]")

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as a table that :func:`benchmark_from_dict` reads back."""
        return {
            "name": self.name,
            "suite": self.suite,
            "description": self.description,
            "protocol": dict(self.protocol),
            "evaluation": dataclasses.asdict(self.evaluation),
            "training": dataclasses.asdict(self.training),
            "algorithms": {k: dict(v) for k, v in self.algorithms.items()},
            "training_protocol": {k: dict(v) for k, v in self.training_protocols.items()},
            "backbone": self.backbone,
            "published": {k: dataclasses.asdict(v) for k, v in self.published.items()},
            "milestones": list(self.milestones),
        }

    def hash(self) -> str:
        """Digest of what defines the val and test tasks and the evaluation: the suite, its
        protocol, the evaluation settings (not ``batch_tasks``, a memory bound, nor
        ``adaptation_steps``, which adds evaluations beside the test without changing it) and the
        version of the task derivation; not the training budget."""
        evaluation = dataclasses.asdict(self.evaluation)
        del evaluation["batch_tasks"], evaluation["adaptation_steps"]
        blob = json.dumps(
            {"suite": self.suite, "protocol": self.protocol, "evaluation": evaluation,
             "task_sampling": TASK_SAMPLING},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_TOP_LEVEL = {"name", "suite", "description", "protocol", "evaluation", "training", "algorithms",
              "training_protocol", "backbone", "published", "milestones"}


def builtin_benchmarks() -> dict[str, Path]:
    """Names of the TOML specs shipped in ``metazoo.benchmarks`` → their paths."""
    folder = resources.files("metazoo.benchmarks")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def find_benchmark(name_or_path: str, plugins=None) -> Benchmark:
    """Load a built-in benchmark by name, one a plugin registered (``plugins``, a
    :class:`metazoo.registry.BenchmarkRegistry`), or any TOML spec by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return load_benchmark(path)
    builtin = builtin_benchmarks()
    if name_or_path in builtin:
        return load_benchmark(builtin[name_or_path])
    if plugins is not None and name_or_path in plugins:
        return plugins.get(name_or_path).factory()
    known = sorted(builtin) + (plugins.names() if plugins is not None else [])
    raise UsageError(
        f"unknown benchmark {name_or_path!r}; known: {', '.join(known)} (or give the path of a .toml spec)"
    )


def load_benchmark(path: Path) -> Benchmark:
    """Parse and check a TOML spec; every error names the file, the key and what is accepted.
    A spec with ``extends = "NAME"`` (a built-in benchmark, or a path relative to the spec's
    folder) is that spec with this one's settings laid over it (see :func:`merge_specs`)."""
    return benchmark_from_dict(_read_spec(Path(path), ()), str(path), default_name=Path(path).stem)


def _read_spec(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The table of the spec at ``path`` with its ``extends`` chain resolved."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"benchmark spec {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ZooError(f"{path}: not a readable TOML file: {exc}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ZooError(f"{path}: extends must name a benchmark (a built-in name or a .toml path), got {base!r}")
    builtin = builtin_benchmarks()
    base_path = builtin[base] if base in builtin else path.parent / base
    if not base_path.exists():
        raise ZooError(f"{path}: extends {base!r}, which is neither a built-in benchmark "
                       f"({', '.join(sorted(builtin))}) nor a file")
    if base_path.resolve() in chain or base_path.resolve() == path.resolve():
        raise ZooError(f"{path}: extends {base!r}, which extends it back (a cycle)")
    inherited = _read_spec(base_path, (*chain, path.resolve()))
    inherited.pop("name", None)  # a spec is named by its own file
    return merge_specs(inherited, data)


def merge_specs(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid over it: tables merge key by key (``[algorithms.maml]`` of
    ``over`` changes only the keys it gives), every other value is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_specs(base[key], value)
        else:
            merged[key] = value
    return merged


def benchmark_from_dict(data: dict[str, Any], where: str, default_name: str | None = None) -> Benchmark:
    """Check a spec given as a table (a parsed TOML file, or :meth:`Benchmark.to_dict` read
    back from a record) and build it; ``where`` names its origin in every error."""
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ZooError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(_TOP_LEVEL))}"
        )
    if not isinstance(data.get("suite"), str):
        raise ZooError(f"{where}: key 'suite' (the task suite's name, a string) is required")
    for key in ("protocol", "evaluation", "training", "algorithms", "training_protocol", "published"):
        if not isinstance(data.get(key, {}), dict):
            raise ZooError(f"{where}: [{key}] must be a table, got {data[key]!r}")
    for section in ("algorithms", "training_protocol", "published"):
        for algo, table in data.get(section, {}).items():
            if not isinstance(table, dict):
                raise ZooError(f"{where}: [{section}.{algo}] must be a table, got {table!r}")
    name = _string(data, "name", where, default_name)
    if not _NAME.fullmatch(name):
        raise ZooError(f"{where}: name {name!r} must be letters, digits and . _ + - (it names a folder)")
    evaluation = _evaluation(data.get("evaluation", {}), f"{where} [evaluation]")
    return Benchmark(
        name=name,
        suite=data["suite"],
        description=_string(data, "description", where, ""),
        protocol=dict(data.get("protocol", {})),
        evaluation=evaluation,
        training=build_config(Training, data.get("training", {}), f"{where} [training]"),
        algorithms={k: dict(v) for k, v in data.get("algorithms", {}).items()},
        training_protocols={k: dict(v) for k, v in data.get("training_protocol", {}).items()},
        backbone=_string(data, "backbone", where, "") if data.get("backbone") is not None else None,
        published={algo: _published(table, evaluation, f"{where} [published.{algo}]")
                   for algo, table in data.get("published", {}).items()},
        milestones=_milestones(data, where),
        source=where,
    )


def _evaluation(table: dict[str, Any], where: str) -> Evaluation:
    """``[evaluation]``, with ``adaptation_steps`` (a list, which :func:`build_config` does not type)."""
    table = dict(table)
    steps = table.pop("adaptation_steps", [])
    evaluation = build_config(Evaluation, table, where)
    try:
        return dataclasses.replace(evaluation, adaptation_steps=steps)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}") from None


def _published(table: dict[str, Any], evaluation: Evaluation, where: str) -> Published:
    """``[published.X]``, with ``by_adaptation_steps`` (a table of step counts to numbers), each
    at a step count the evaluation measures."""
    table = dict(table)
    given = table.pop("by_adaptation_steps", None)
    published = build_config(Published, table, where)
    if given is None:
        return published
    accepted = "a table of inner-step counts to the paper's values, such as {0 = -40.0, 1 = -10.0}"
    if not isinstance(given, dict) or not given:
        raise ZooError(f"{where}: by_adaptation_steps must be {accepted}; got {given!r}")
    values = {}
    for key, value in given.items():
        if not (isinstance(key, str) and key.isdigit()) or not isinstance(value, int | float) or isinstance(value, bool):
            raise ZooError(f"{where}: by_adaptation_steps must be {accepted}; got {key!r} = {value!r}")
        if int(key) not in evaluation.adaptation_steps:
            raise ZooError(f"{where}: by_adaptation_steps gives step {int(key)}, which [evaluation] "
                           f"adaptation_steps does not list ({list(evaluation.adaptation_steps)})")
        values[str(int(key))] = float(value)
    return dataclasses.replace(published, by_adaptation_steps=dict(sorted(values.items(), key=lambda kv: int(kv[0]))))


def _milestones(data: dict[str, Any], where: str) -> tuple[float, ...]:
    values = data.get("milestones", [])
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                               for v in values):
        raise ZooError(f"{where}: milestones must be a list of numbers (validation scores, such as "
                       f"[0.95, 0.97]), got {values!r}")
    return tuple(float(v) for v in values)


def _string(data: dict, key: str, where: str, default: str | None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        if value is None:
            raise ZooError(f"{where}: key {key!r} (a string) is required")
        raise ZooError(f"{where}: key {key!r} must be a string, got {value!r}")
    return value
