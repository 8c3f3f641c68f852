"""The author's guide, plugins/README.md: a section for every hook, and its examples work as
written (they register, and pass the conformance kit)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import metazoo
from metazoo import hookspecs

GUIDE = Path(__file__).resolve().parents[1] / "plugins" / "README.md"


def test_every_hook_has_a_section_in_the_guide():
    text = GUIDE.read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("zoo_")]
    assert hooks
    missing = [name for name in hooks if not re.search(rf"^## `{name}\(", text, re.MULTILINE)]
    assert not missing, f"hooks without a section in {GUIDE}: {missing}"


def test_the_guides_examples_register_and_conform(one_thread):
    from metazoo.plugins.hyperplanes import Hyperplanes
    from metazoo.testing import assert_learner_conforms, assert_suite_conforms

    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    module = types.ModuleType("guide_plugin")
    for block in blocks[:2]:  # the algorithm and the suite (the others are fragments)
        exec(compile(block, str(GUIDE), "exec"), module.__dict__)
    pm = metazoo.get_plugin_manager(autoload=False)
    pm.register(module, name="guide")
    zoo = metazoo.Zoo(pm)
    assert "signmaml" in zoo.algorithms.names() and "lines" in zoo.suites.names()
    assert_suite_conforms(zoo.suites.get("lines").factory())
    assert_learner_conforms(zoo.algorithms.get("signmaml").factory, Hyperplanes())
