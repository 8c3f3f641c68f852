"""A short meta-training on real Omniglot 5-way 1-shot lifts accuracy far above chance."""

from __future__ import annotations

from pathlib import Path

import metazoo
import pytest
import torch
from metazoo.evaluation import TaskList, evaluate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"Omniglot data not found at {DATA}")


def test_protonet_learns_omniglot_5way_1shot_quickly():
    zoo = metazoo.Zoo(metazoo.get_plugin_manager(autoload=False))
    suite = zoo.suites.get("omniglot").factory(ways=5, shots=1, queries=5, data_dir=str(DATA))
    torch.manual_seed(0)
    learner = zoo.algorithms.get("protonet").factory(suite.make_model(), suite, meta_batch=4)
    test_tasks = list(TaskList(suite, "test", 40, seed=7, batch_tasks=20))
    before = evaluate(learner, suite, test_tasks, torch.device("cpu")).mean().item()
    stream = torch.Generator().manual_seed(0)
    for _ in range(20):
        learner.meta_train_step(suite.sample("train", 4, stream))
    after = evaluate(learner, suite, test_tasks, torch.device("cpu")).mean().item()
    assert after > 0.65, (before, after)  # chance is 0.2
    assert after > before + 0.1
