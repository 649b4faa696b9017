r"""The global feature of a point cloud: the maximum of every channel over the points.

.. math::
    v_{bc} = \max_n y_{bcn}, \qquad
    \frac{\partial L}{\partial y_{bcn}} = \frac{g_{bc}}{|\{m : y_{bcm} = v_{bc}\}|} [y_{bcn} = v_{bc}]

the gradient split evenly over tied maxima, exactly as autograd of :func:`torch.amax` defines it
(same values, bit for bit). On CPU the backward is one compiled sweep per row
(:func:`pointseg.nn.native.max_backward`) instead of autograd's mask, conversion, sum and product,
four passes over fresh ``(B, C, N)`` tensors: for the 1024-channel fusion output of ResGCN-28 that
was about 5 % of a training step. Elsewhere (CUDA, no compiler) it is autograd of ``amax``.

Shapes: ``y (..., N) -> (..., 1)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import native


class _GlobalMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor) -> Tensor:
        v = y.amax(dim=-1, keepdim=True)
        ctx.save_for_backward(y, v)
        return v

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        y, v = ctx.saved_tensors
        out = native.max_backward(y, v, g)
        if out is None:                      # the kernels cannot take it: autograd's own formula
            mask = y == v
            out = (g / mask.sum(dim=-1, keepdim=True)) * mask
        return out


def global_max(y: Tensor) -> Tensor:
    """``y.amax(dim=-1, keepdim=True)`` with a one-sweep backward on CPU (see the module doc)."""
    if y.requires_grad and torch.is_grad_enabled() and y.device.type == "cpu":
        return _GlobalMax.apply(y)
    return y.amax(dim=-1, keepdim=True)


class GlobalMax(nn.Module):
    r"""Max pooling over the points, :math:`v_{bc} = \max_n y_{bcn}`, as a module (so that
    :func:`pointseg.nn.reference.to_reference` can swap in plain ``amax``).

    Shapes: ``(B, C, N) -> (B, C, 1)``.
    """

    def forward(self, y: Tensor) -> Tensor:
        return global_max(y)
