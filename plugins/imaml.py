"""iMAML: implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019, Algorithms 1–2).

Each task's inner loop approximately solves the proximal problem
φ* = argmin_φ L_support(φ) + (λ/2)‖φ − θ‖² (``inner_steps`` gradient steps from θ). Its
meta-gradient is the implicit one, dL_query(φ*)/dθ = (I + H/λ)⁻¹ ∇L_query(φ*), with H the Hessian
of L_support at φ* (§3, Eq. 6), which needs no differentiation through the inner loop: it is
found by ``cg_steps`` iterations of conjugate gradient on Hessian–vector products (§3.1). The
engine pools it as the gradient of Σ_i ⟨g_i, θ⟩ with g_i held constant. The defaults (λ = 1,
10 inner steps, 5 CG iterations) are ours; the paper tunes λ per benchmark.
"""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.config import positive
from metazoo.engine import map_tasks
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, Params

PAPER = "Rajeswaran, Finn, Kakade & Levine. Meta-Learning with Implicit Gradients. NeurIPS 2019"


@dataclass(frozen=True)
class IMAMLConfig(InnerLoopConfig):
    inner_steps: int = 10
    lam: float = 1.0  # λ, the strength of the proximal term
    cg_steps: int = 5  # conjugate-gradient iterations for the implicit gradient
    first_order: bool = True  # the inner loop is never differentiated through

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "lam", "cg_steps")


class IMAML(ModelAlgorithmLearner):
    """MAML with a proximal inner loop and the implicit meta-gradient."""

    Config = IMAMLConfig

    def inner_update(self, params, grads, step):
        """A gradient step on L_support(φ) + (λ/2)‖φ − θ‖² (θ a constant here)."""
        theta = dict(self.model.named_parameters())
        lr, lam = self.config.inner_lr, self.config.lam
        return {n: p - lr * (grads[n] + lam * (p - theta[n].detach())) for n, p in params.items()}

    def chunk_objective(self, chunk):
        theta = dict(self.model.named_parameters())
        config = self.config

        def task_step(sx, sy, qx, qy):
            phi = {n: p.detach() for n, p in self.adapt(sx, sy, config.inner_steps, create_graph=False).items()}
            query_grad = torch.func.grad(lambda p: self.loss(p, qx, qy))(phi)
            support_grad = torch.func.grad(lambda p: self.loss(p, sx, sy))

            def matrix(v: Params) -> Params:  # (I + H/λ) v, H the support loss's Hessian at φ
                _, hv = torch.func.jvp(support_grad, (phi,), (v,))
                return {n: v[n] + hv[n] / config.lam for n in v}

            implicit = conjugate_gradient(matrix, query_grad, config.cg_steps)
            return implicit, self.loss(phi, qx, qy)

        implicit, losses = map_tasks(task_step, chunk.tensors(), self.execution)  # [T, ...], [T]
        objective = sum((implicit[n].detach().sum(0) * theta[n]).sum() for n in theta)
        return objective, losses.sum().detach()


def conjugate_gradient(matrix, b: Params, steps: int) -> Params:
    """``steps`` iterations of conjugate gradient for ``matrix(x) = b`` from x = 0 (a fixed count,
    no early stop: it runs under ``torch.vmap``)."""
    def dot(u, v):
        return sum((u[n] * v[n]).sum() for n in u)

    x = {n: torch.zeros_like(v) for n, v in b.items()}
    r = dict(b)
    p = dict(b)
    rr = dot(r, r)
    for _ in range(steps):
        ap = matrix(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(torch.finfo(pap.dtype).tiny), torch.zeros_like(pap))
        x = {n: x[n] + alpha * p[n] for n in x}
        r = {n: r[n] - alpha * ap[n] for n in r}
        rr_new = dot(r, r)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(torch.finfo(rr.dtype).tiny), torch.zeros_like(rr))
        p = {n: r[n] + beta * p[n] for n in p}
        rr = rr_new
    return x


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("imaml", IMAML, family="model-algorithm", paper=PAPER,
                 summary="proximal inner loop, implicit meta-gradient by conjugate gradient")
