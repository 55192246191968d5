"""SIGReg: Sketched Isotropic Gaussian Regularization (LeJEPA, Balestriero & LeCun 2025,
arXiv 2511.08544), the one regulariser that lets an encoder be "learned jointly" without EMA,
stop-gradient or a teacher (notebook 09).

The embeddings should look like samples of an isotropic standard Gaussian. A distribution in D
dimensions is hard to test, its 1-D projections are easy (and by the Cramér–Wold theorem they
determine it), so SIGReg projects the N embeddings on M random unit directions and tests each
projection against N(0, 1) with the Epps–Pulley statistic: the weighted squared distance between
the sample's empirical characteristic function and the standard normal's,

    T = N * integral w(t) |ECF(t) - phi(t)|^2 dt,   ECF(t) = mean_n exp(i t x_n),   phi(t) = exp(-t^2/2),

with w(t) = exp(-t^2/2). |ECF - phi|^2 = (mean cos(t x) - phi)^2 + (mean sin(t x))^2, and the
integrand is even in t, so the integral is twice the one over t >= 0, taken by the trapezoid
rule on `knots` points of [0, t_max]. The loss is the mean of T over the directions, which are
drawn afresh every step. T is about 1 for a Gaussian sample of any size and grows with N for
any other distribution: a collapsed sample (every embedding the same) gives T of order N.

    loss = sigreg(embeddings [N, D], generator=g)          # scalar, differentiable
"""
from __future__ import annotations

import torch
import torch.distributed

from jepa_lite.errors import BadValue

# the minimal example's settings: 256 directions, 17 knots on [0, 3]
NUM_DIRECTIONS = 256
KNOTS = 17
T_MAX = 3.0


def random_directions(dim: int, num_directions: int = NUM_DIRECTIONS, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """[dim, num_directions] Gaussian columns scaled to unit length (uniform on the sphere), drawn on
    the CPU from `generator` (so a seed gives the same directions on every device)."""
    if dim < 1 or num_directions < 1:
        raise BadValue(f"dim and num_directions must be >= 1, got {dim} and {num_directions}")
    directions = torch.randn(dim, num_directions, generator=generator)
    return (directions / directions.norm(dim=0, keepdim=True)).to(device)


def quadrature(knots: int = KNOTS, t_max: float = T_MAX, device: torch.device | str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The knots t [K] on [0, t_max] and their weights [K]: trapezoid weights doubled (the integral
    over the whole line of an even integrand) times w(t) = exp(-t^2 / 2)."""
    if knots < 2 or not t_max > 0:
        raise BadValue(f"knots must be >= 2 and t_max > 0, got knots={knots}, t_max={t_max}")
    t = torch.linspace(0.0, t_max, knots, device=device)
    step = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * step, device=device)
    weights[0] = weights[-1] = step                     # 2 x (step / 2) at the two ends
    return t, weights * torch.exp(-t.square() / 2)


class SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) that gradients flow through: every process gets the sum, and the gradient of
    each process's input is the sum of the processes' output gradients (each process's loss uses
    the sum of every process's input). DDP then averages the parameter gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        torch.distributed.all_reduce(total)
        return total


def epps_pulley(projections: torch.Tensor, knots: int = KNOTS, t_max: float = T_MAX,
                across_processes: bool = False) -> torch.Tensor:
    """projections [N, M] (N samples of M one-dimensional variables) -> [M], the Epps–Pulley
    statistic of each column against N(0, 1).

    across_processes: the N rows are this process's share of a sample split evenly over the
    processes of a torch.distributed group; the statistic is the whole sample's (its ECF is the
    mean of the processes' ECFs), with gradients flowing back to every process's rows."""
    if projections.dim() != 2 or projections.shape[0] < 2:
        raise BadValue(f"projections must be [N, M] with N >= 2 samples, got {tuple(projections.shape)}")
    x = projections.float()
    t, weights = quadrature(knots, t_max, x.device)
    tx = x.unsqueeze(-1) * t                                            # [N, M, K]
    ecf = torch.stack([torch.cos(tx).mean(dim=0), torch.sin(tx).mean(dim=0)])     # [2, M, K]
    n = x.shape[0]
    if across_processes:
        world = torch.distributed.get_world_size()
        ecf, n = SumOverProcesses.apply(ecf) / world, n * world
    ecf_real, ecf_imag = ecf[0], ecf[1]
    gaussian = torch.exp(-t.square() / 2)                                # phi(t), real
    distance = (ecf_real - gaussian).square() + ecf_imag.square()       # |ECF - phi|^2, [M, K]
    return n * (distance * weights).sum(dim=-1)


def sigreg(embeddings: torch.Tensor, num_directions: int = NUM_DIRECTIONS, knots: int = KNOTS,
           t_max: float = T_MAX, generator: torch.Generator | None = None,
           across_processes: bool = False) -> torch.Tensor:
    """embeddings [N, D] (or [..., D], flattened to N rows) -> scalar: the mean over
    `num_directions` random directions of the Epps–Pulley statistic of the projected sample.
    across_processes: the statistic of the sample all the processes' embeddings make together
    (every process must draw the same directions: the same `generator` seed)."""
    z = embeddings.reshape(-1, embeddings.shape[-1])
    directions = random_directions(z.shape[-1], num_directions, generator, z.device)
    return epps_pulley(z.float() @ directions, knots, t_max, across_processes).mean()
