"""Batch norm with running statistics (the Prototypical / Matching Networks reference code's
normalisation): against torch's BatchNorm2d, in the learners, and refused where it cannot work."""

import pytest
import torch
from metazoo.errors import ZooError
from metazoo.models import Conv4, RunningBatchNorm
from metazoo.plugins.maml import MAML
from metazoo.plugins.protonet import ProtoNet
from test_conv4 import RandomImages


def test_running_batch_norm_matches_torch_batch_norm_in_both_modes():
    ours, reference = RunningBatchNorm(3).double(), torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        for norm in (ours, reference):
            norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            norm.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # training: the batch's statistics, and the running averages follow them
        x = 3 + 2 * torch.randn(6, 3, 5, 5, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x))  # evaluation: the running averages
    assert torch.equal(ours(x[:1]), ours(x)[:1])  # an example's output no longer depends on its batch


def protonet(**hp):
    suite = RandomImages(ways=3, shots=2, queries=2)
    torch.manual_seed(0)
    model = Conv4(out_features=3, hidden=8, norm="running")
    return ProtoNet(model, suite, meta_batch=2, **hp), suite


def test_a_model_with_running_statistics_trains_task_by_task_and_tests_in_evaluation_mode():
    learner, suite = protonet()
    assert learner.execution == "loop"
    norm = learner.model.body.block0.norm
    before = norm.running_mean.clone()
    learner.meta_train_step(suite.sample("train", 2, torch.Generator().manual_seed(0)))
    assert not torch.equal(norm.running_mean, before)  # updated by training...
    after = norm.running_mean.clone()
    batch = suite.sample("test", 2, torch.Generator().manual_seed(1))
    logits = learner.predict(batch)
    assert torch.equal(norm.running_mean, after)  # ...not by testing
    # No transduction: a query's logits do not depend on the other queries of its task.
    alone = batch.__class__(batch.support_x, batch.support_y, batch.query_x[:, :1], batch.query_y[:, :1])
    torch.testing.assert_close(learner.predict(alone), logits[:, :1])
    # The running statistics are state: a state_dict round trip gives the same predictions.
    clone, _ = protonet()
    clone.load_state_dict(learner.state_dict())
    torch.testing.assert_close(clone.predict(batch), logits)


@pytest.mark.parametrize("setting", [{"execution": "vmap"}, {"compile": True}])
def test_vmap_and_compile_are_refused_for_running_statistics(setting):
    with pytest.raises(ZooError, match="cannot update the running statistics"):
        protonet(**setting)
    suite = RandomImages()
    with pytest.raises(ZooError, match=f"{next(iter(setting))} = "):
        MAML(Conv4(hidden=8, norm="running"), suite, **setting)


def test_conv4_rejects_an_unknown_normalisation():
    with pytest.raises(ValueError, match="norm must be 'batch' or 'running', got 'layer'"):
        Conv4(norm="layer")
