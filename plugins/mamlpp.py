"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019, §4).

MAML with the paper's fixes, each a hyperparameter of its own:

- Multi-step loss (MSL): the outer objective of a task is Σ_{i=1..N} v_i L_query(θ_i), the query
  loss after every inner step i, weighted (§4, the MSL update rule). The weights start uniform,
  v_i = 1/N, and are annealed towards the last step: v_i = max((1 − t)/N, 0.03/N) for i < N and
  v_N = min((1 + (N − 1)t)/N, 1 − 0.03(N − 1)/N), with t = s / ``msl_anneal_steps`` at outer
  step s; from t = 1 on only the last step's loss counts (v_N = 1). The schedule, its floor 0.03/N
  and its end are the reference code's (``get_per_step_loss_importance_vector``), which
  anneals over ``multi_step_loss_num_epochs = 10`` epochs of ``total_iter_per_epoch = 500`` outer
  steps, as a staircase (t constant within an epoch); ours moves every outer step and meets the
  staircase at every epoch boundary. Default 10 × 500 = 5000 outer steps.
- Derivative-order annealing (DA): first-order meta-gradients for the first
  ``first_order_steps`` outer steps, second order after (§4: "first-order gradients for the first
  50 epochs of the training phase"; 50 epochs × 500 outer steps = 25,000).
- Per-layer per-step learning rates (LSLR): each adapted parameter tensor (a layer's weight, its
  bias) has a learnt rate for every inner step, α_{p,i}, all starting at ``inner_lr``
  (0.1: the reference code's ``init_inner_loop_learning_rate`` for Omniglot; 0.01 on a
  regression suite, MAML's sinusoid rate, as MAML++ reports no regression); θ_{i} = θ_{i−1} −
  α_{·,i} ∘ ∇L_support(θ_{i−1}). A rate may turn negative (the paper's "learning rate and
  direction").
- Per-step batch-norm weights and biases (BNWB): every batch-norm layer (``BatchStatNorm``,
  ``RunningBatchNorm`` or a torch batch norm) runs inner step i, and the queries after it, with
  a weight and bias of step i. Step 1 uses the model's own; steps 2..N copies of them held by the
  learner (``bn_steps``), all meta-learnt; as in the reference code, the inner loop does not adapt
  batch-norm parameters (``enable_inner_loop_optimizable_bn_params = false``). A backbone
  without batch norm (the MLP) has no BNWB: every parameter is adapted.
- Cosine annealing of the outer rate (CA, §4): ``lr_schedule = "cosine"`` over
  ``lr_anneal_steps`` = 100 epochs × 500 outer steps (the reference code anneals Adam's rate per
  epoch from 1e-3 to 1e-5 over its ``total_epochs = 100``; ours ends at 0).

Left out: per-step batch-norm running statistics (BNRS). They are state updated in place by
every forward pass, which the functional engine cannot batch over tasks (``vmap``) or compile,
and the reference code never normalises with them (it calls ``F.batch_norm`` with
``training=True`` at training and test alike, so they are collected but unused): normalising by
each batch's own statistics, as ``BatchStatNorm`` does, is what it computes. Inner steps beyond
the trained ``inner_steps`` (``eval_inner_steps`` larger) reuse the last step's rates and
batch-norm weights. The reference code's meta-gradient clipping on mini-ImageNet is not applied.

The schedules read ``outer_step``, a buffer of the learner counting its outer steps: it is in
``state_dict()``, so a checkpoint resumes the schedules where they were, and the compiled step
reads it as a tensor (the weights) or through two Python flags set before each step (the
derivative order, whether non-final losses count), which recompile the step at most twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import metazoo
import torch
from metazoo.config import positive
from metazoo.engine import map_tasks
from metazoo.errors import ZooError
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, parameter_key
from metazoo.models import BatchStatNorm, RunningBatchNorm
from torch import nn

PAPER = "Antoniou, Edwards & Storkey. How to train your MAML. ICLR 2019 (MAML++)"
EPOCH = 500  # outer steps per epoch in the reference code (total_iter_per_epoch)
MSL_FLOOR = 0.03  # the reference code's lower bound on a non-final weight, times 1/N
#: Default initial inner rate by the suite's kind: 0.1, the reference code's Omniglot configs
#: (``init_inner_loop_learning_rate``); MAML++ has no regression experiment, so regression takes
#: MAML's sinusoid α = 0.01 (Finn et al. 2017, §5.1), at which five steps stay stable.
INNER_LR = {"classification": 0.1, "regression": 0.01}



@dataclass(frozen=True)
class MAMLPPConfig(InnerLoopConfig):
    inner_steps: int = 5  # N, in training and (eval_inner_steps unset) at test: the reference configs
    # Initial value of every learnt rate (LSLR), or the fixed rate without it; None: by the suite's
    # kind, 0.1 for classification and 0.01 for regression (see INNER_LR).
    inner_lr: float | None = None
    msl_anneal_steps: int = 10 * EPOCH  # MSL over the first 10 epochs; 0: the last step's loss only
    first_order_steps: int = 50 * EPOCH  # DA: first order for the first 50 epochs; 0: second order throughout
    learn_inner_lrs: bool = True  # LSLR
    per_step_bn: bool = True  # BNWB (where the backbone has batch-norm weights)
    lr_schedule: Literal["constant", "step", "cosine", "linear"] = "cosine"  # CA
    lr_anneal_steps: int | None = 100 * EPOCH

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("msl_anneal_steps", "first_order_steps"):
            if getattr(self, name) < 0:
                raise ZooError(f"{name} must be >= 0 (outer steps), got {getattr(self, name)!r}")
        positive(self, "lr_anneal_steps")


def batch_norm_affine(model: nn.Module) -> list[str]:
    """Names of the weights and biases of the batch-norm layers of ``model``."""
    kinds = (BatchStatNorm, RunningBatchNorm, nn.modules.batchnorm._BatchNorm)
    return [f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules() if isinstance(module, kinds)
            for name in ("weight", "bias") if getattr(module, name, None) is not None]


class MAMLPP(ModelAlgorithmLearner):
    """MAML with multi-step loss, derivative-order annealing, learnt per-layer per-step inner
    rates, per-step batch-norm weights and cosine annealing of the outer rate."""

    Config = MAMLPPConfig
    config: MAMLPPConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        if self.config.inner_lr is None:
            self.config = dataclasses.replace(self.config, inner_lr=INNER_LR[suite.kind])
        config, steps = self.config, self.config.inner_steps
        self.register_buffer("outer_step", torch.zeros((), dtype=torch.int64))
        norms = set(batch_norm_affine(model))
        params = dict(model.named_parameters())
        self._adapted = [name for name in params if name not in norms]
        if not self._adapted:
            raise ZooError("mamlpp adapts every parameter but the batch-norm weights, and the model has no other")
        if config.learn_inner_lrs:
            self.inner_lrs = nn.ParameterDict({
                parameter_key(name): nn.Parameter(torch.full((steps,), config.inner_lr, dtype=params[name].dtype,
                                                    device=params[name].device))
                for name in self._adapted})
        self._per_step = sorted(norms) if config.per_step_bn and steps > 1 else []
        if self._per_step:  # steps 2..N: copies of the model's own (step 1's) weights, [N − 1, C]
            self.bn_steps = nn.ParameterDict({
                parameter_key(name): nn.Parameter(params[name].detach().clone().expand(steps - 1, *params[name].shape).clone())
                for name in self._per_step})

    # -- the inner loop ---------------------------------------------------------------------------

    def adapted_names(self) -> list[str]:
        return self._adapted

    def inner_update(self, params, grads, step):
        """θ_i = θ_{i−1} − α_{p,i} ∇L (LSLR), or the fixed ``inner_lr`` without it."""
        if not self.config.learn_inner_lrs:
            return super().inner_update(params, grads, step)
        i = min(step, self.config.inner_steps - 1)
        return {n: p - self.inner_lrs[parameter_key(n)][i] * grads[n] for n, p in params.items()}

    def step_parameters(self, step):
        """BNWB: the batch-norm weights and biases of inner step ``step`` (step 0: the model's)."""
        i = min(step, self.config.inner_steps - 1)
        if i == 0 or not self._per_step:
            return {}
        return {name: self.bn_steps[parameter_key(name)][i - 1] for name in self._per_step}

    # -- the schedules ----------------------------------------------------------------------------

    def second_order(self) -> bool:
        """DA: whether this outer step differentiates through the inner gradients."""
        if self.__dict__.get("_functional"):  # in the compiled step: set by meta_train_step
            return self.__dict__["_phase"][0]
        return not self.config.first_order and int(self.outer_step) >= self.config.first_order_steps

    def multi_step(self) -> bool:
        """Whether the losses after the steps before the last still count (MSL, t < 1)."""
        if self.__dict__.get("_functional"):
            return self.__dict__["_phase"][1]
        return self.config.inner_steps > 1 and int(self.outer_step) < self.config.msl_anneal_steps

    def loss_weights(self) -> torch.Tensor:
        """MSL weights ``[N]`` of the query losses after steps 1..N at the current outer step, by
        tensor operations on ``outer_step`` (the compiled step does not recompile as it moves)."""
        n, span = self.config.inner_steps, self.config.msl_anneal_steps
        last = torch.eye(n, dtype=torch.float64, device=self.outer_step.device)[-1]  # [0, …, 0, 1]
        if n == 1 or span == 0:
            return last
        t = self.outer_step.to(torch.float64) / span
        floor = MSL_FLOOR / n
        early = ((1 - t) / n).clamp(min=floor).expand(n - 1)
        final = ((1 + (n - 1) * t) / n).clamp(max=1 - (n - 1) * floor).reshape(1)
        return torch.where(t < 1, torch.cat([early, final]), last)

    # -- the outer step -----------------------------------------------------------------------------

    def query_loss(self, sx, sy, qx, qy, eager=False):
        return self._task_losses(sx, sy, qx, qy, eager, self.second_order(), self.multi_step(),
                                 self.loss_weights())[0]

    def _task_losses(self, sx, sy, qx, qy, eager, second_order, multi_step, weights):
        """(MSL objective, query loss after the last step) of one task."""
        steps = []
        self.adapt(sx, sy, self.config.inner_steps, second_order, eager, trajectory=steps)
        final = self.loss(steps[-1], qx, qy)
        if not multi_step:
            return final, final
        losses = torch.stack([self.loss(p, qx, qy) for p in steps[:-1]] + [final])  # [N]
        return (weights.to(losses.dtype) * losses).sum(), final

    def chunk_objective(self, chunk):
        """Σ over the chunk's tasks of the MSL objective; the reported loss is the query loss
        after the last inner step, comparable with other learners' at every outer step."""
        execution = self.execution
        eager = self.eager_inner_loop(execution)
        second_order, multi_step, weights = self.second_order(), self.multi_step(), self.loss_weights()

        def task(sx, sy, qx, qy):
            return self._task_losses(sx, sy, qx, qy, eager, second_order, multi_step, weights)

        objective, final = map_tasks(task, chunk.tensors(), execution)  # [T], [T]
        return objective.sum(), final.sum()

    def meta_train_step(self, batch):
        step = int(self.outer_step)
        config = self.config
        self.__dict__["_phase"] = (not config.first_order and step >= config.first_order_steps,
                                   config.inner_steps > 1 and step < config.msl_anneal_steps)
        stats = super().meta_train_step(batch)
        with torch.no_grad():
            self.outer_step += 1
        return stats


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("mamlpp", MAMLPP, family="model-algorithm", paper=PAPER, kinds=("classification", "regression"),
                 summary="MAML++: multi-step loss, derivative-order annealing, per-step rates and batch norm")
