"""The network's forward pass over padded blocks at inference: softmax scores of ``(B, P, 9)`` blocks.

One place for how blocks meet the network (batching, layout, threads), so the sliding inference
(:mod:`pointseg.segmentation.inference`) and the block-level scoring share it.
"""
from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def block_scores(model: torch.nn.Module, blocks: np.ndarray, device: torch.device,
                 batch_size: int) -> torch.Tensor:
    """Softmax scores ``(B, P, C)`` float32 on the CPU of 9-channel blocks ``(B, P, 9)``."""
    out = []
    for s in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[s:s + batch_size]).to(device).transpose(1, 2).contiguous()
        out.append(torch.softmax(model(x).float(), dim=1).transpose(1, 2).cpu())
    return torch.cat(out)
