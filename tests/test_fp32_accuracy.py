"""Float32 accuracy of the fast EdgeConv path: at least as close to float64 as the straightforward
edge-tensor formulation, on inputs with a large common offset (where forming W_b x_j - W_b x_i
from uncentred node terms, or the BatchNorm gradient as p + q h, cancels)."""
import torch

from pointseg.nn.precision import one_edge_conv


def test_fast_float32_is_as_accurate_as_the_edgewise_formulation_at_large_offsets():
    # The deep-stack case (ResGCN-28's depth, fixed neighbours) is still open in issue 14:
    # `python tools/accuracy_fp32.py` measures it; no test stands in for it until it is fixed.
    torch.set_num_threads(1)
    fast, ref = one_edge_conv(points=256, channels=32, k=8)        # offsets 10-100
    # 1.5x: headroom for round-off noise
    assert fast <= 1.5 * ref + 1e-6, (fast, ref)
