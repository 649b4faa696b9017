"""The shared deep-GCN library: kNN graphs, convolutions and blocks for dense point blocks
``(B, C, N)`` and sparse graphs ``(N, C)`` + ``edge_index``. See ``graph.py`` for the conventions."""
from .block import BLOCK_KINDS, CONVS, GCNBlock, make_conv
from .edge_conv import EdgeConv
from .edge_mlp_conv import EdgeMLPConv
from .gat_conv import GATConv
from .gcn_conv import GCNConv
from .gen_conv import GENConv, MsgNorm
from .gin_conv import GINConv
from .graph import gather_neighbors, neighbor_reduce
from .knn import DilatedKnn, dilated_knn, dilated_knn_graph
from .mlp import MLP, ConvNormAct, Pointwise, act_layer, norm_layer
from .mr_conv import MRConv
from .sage_conv import SAGEConv
from .reversible import ReversibleLayer, ReversibleStack, RevBranch, SharedDropout, reversible_stack
from .deq import DEQ, DEQCell, DEQConvergenceError

__all__ = [
    "BLOCK_KINDS", "CONVS", "GCNBlock", "make_conv", "EdgeConv", "EdgeMLPConv", "GATConv", "GCNConv", "GINConv", "GENConv", "MsgNorm", "MRConv", "SAGEConv",
    "DilatedKnn", "dilated_knn", "dilated_knn_graph", "MLP", "ConvNormAct", "Pointwise",
    "act_layer", "norm_layer", "gather_neighbors", "neighbor_reduce",
    "ReversibleLayer", "ReversibleStack", "RevBranch", "SharedDropout", "reversible_stack",
    "DEQ", "DEQCell", "DEQConvergenceError",
]
