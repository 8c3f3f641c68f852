"""``zoo new-plugin NAME``: write a ready plugin package (pyproject with the entry point, the
module, a test that runs the conformance kit, a README)."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from metazoo.errors import UsageError

_ALGORITHM = '''"""{title}: a model-algorithm meta-learner (edit the inner update below)."""

import metazoo


class {cls}(metazoo.ModelAlgorithmLearner):
    """MAML whose inner step is written here: θ ← θ − α·∇L(θ)."""

    def inner_update(self, params, grads, step):
        return {{n: p - self.config.inner_lr * grads[n] for n, p in params.items()}}


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("{name}", {cls}, family="model-algorithm", paper="(your citation)")
'''

_SUITE = '''"""{title}: a task suite (edit how tasks are drawn below)."""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.config import build_config
from metazoo.models import MLP
from metazoo.tasks import split_stream


@dataclass(frozen=True)
class {cls}Config:
    shots: int = 5  # support points per task
    queries: int = 10  # query points per task


class {cls}(metazoo.TaskSuite):
    """y = a·x + b with a, b ~ U[-2, 2]."""

    name = "{name}"
    kind = "regression"

    def __init__(self, **protocol):
        self.config = build_config({cls}Config, protocol, "suite {name}")

    def sample(self, split, num_tasks, generator):
        own = split_stream(generator, split)  # the split's own stream; refuses an unknown split
        c = self.config
        a, b = (4 * torch.rand(2, num_tasks, 1, 1, generator=own) - 2).unbind(0)
        x = 10 * torch.rand(num_tasks, c.shots + c.queries, 1, generator=own) - 5
        y = a * x + b
        return metazoo.TaskBatch(x[:, : c.shots], y[:, : c.shots], x[:, c.shots :], y[:, c.shots :])

    def make_model(self):
        return MLP(1, 20, 1)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("{name}", {cls}, summary="(one line on the tasks)")
'''

_TEST_ALGORITHM = '''from metazoo.plugins.hyperplanes import Hyperplanes
from metazoo.testing import assert_learner_conforms
from {module} import {cls}


def test_{module}_conforms():
    assert_learner_conforms({cls}, Hyperplanes())
'''

_TEST_SUITE = '''from metazoo.testing import assert_suite_conforms
from {module} import {cls}


def test_{module}_conforms():
    assert_suite_conforms({cls}())
'''

_PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "metazoo-{name}"
version = "0.1.0"
description = "{title}, a metazoo plugin"
requires-python = ">=3.11"
dependencies = ["metazoo"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points.metazoo]
{name} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''

_README = '''# metazoo-{name}

{title}: a metazoo {kind} plugin.

```sh
pip install -e .            # registers the entry point `{name}` in the group `metazoo`
zoo list '{name}'           # shows it
zoo check {name}            # the conformance kit
pytest                      # the same checks from test_{module}.py
{bench}
```

See metazoo's author's guide (`plugins/README.md` in the metazoo repository) for every hook.
'''


def new_plugin(name: str, kind: str, where: Path) -> Path:
    """Write the package ``metazoo-NAME`` for an algorithm or a suite into ``where/metazoo-NAME``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise UsageError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter")
    folder = where / f"metazoo-{name}"
    if folder.exists():
        raise UsageError(f"{folder} already exists; pick another name or folder")
    module = f"metazoo_{name}"
    cls = "".join(part.capitalize() for part in name.split("_"))
    values = {"name": name, "module": module, "cls": cls, "title": cls, "kind": kind}
    bench = (f"zoo bench --algos {name},maml --suite sinusoid --steps 100" if kind == "algorithm"
             else f"zoo bench --suite {name} --algos maml --steps 100")
    folder.mkdir(parents=True)
    (folder / f"{module}.py").write_text((_ALGORITHM if kind == "algorithm" else _SUITE).format(**values))
    (folder / f"test_{module}.py").write_text((_TEST_ALGORITHM if kind == "algorithm" else _TEST_SUITE).format(**values))
    (folder / "pyproject.toml").write_text(_PYPROJECT.format(**values))
    (folder / "README.md").write_text(_README.format(**values, bench=bench))
    return folder
