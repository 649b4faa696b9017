"""Graph presets: exact reference parameter counts, the presets command, the backbone registry."""
import pytest
import torch

from pointseg.graphs.model import BACKBONES, GraphNet, GraphNetConfig, register_backbone
from pointseg.models import count_parameters
from pointseg.graphs.presets import GRAPH_PRESETS, build_preset, get_preset, preset_parameter_count
from pointseg.cli import main

# Targets from design.md §4 (DeepGCNs / DeeperGCN reference code), not from this implementation.
DESIGN_COUNTS = {
    "deepergcn-ogbn-proteins": 2_374_568, "deepergcn-ogbn-products": 253_743,
    "deepergcn-ogbn-arxiv": 491_176, "deepergcn-ogbg-molhiv": 532_232, "deepergcn-ogbg-ppa": 2_336_421,
    "deepergcn-ogbl-collab": 117_383, "resmrgcn-28-ppi": 14_762_105, "densemrgcn-14-ppi": 53_417_593,
}


@pytest.mark.parametrize("name", sorted(DESIGN_COUNTS))
def test_preset_parameter_count_matches_reference(name):
    assert preset_parameter_count(name) == DESIGN_COUNTS[name]


def test_presets_command_prints_one_name_and_count_per_preset(capsys):
    assert main(["graphs", "presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(GRAPH_PRESETS)
    got = dict(line.split() for line in lines)
    for name, n in DESIGN_COUNTS.items():
        assert got[name] == str(n)
    assert got["deepergcn"] == "-"


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean deepergcn-ogbn-arxiv"):
        get_preset("deepergcn-ogbn-arxive")


def test_a_new_backbone_plugs_in_by_name():
    calls = []

    class Twice(torch.nn.Module):
        def __init__(self, cfg, conv, cin):
            super().__init__()
            self.first = conv(cin, cfg.channels)
            self.blocks = torch.nn.ModuleList()
            self.out_channels = cfg.channels
            calls.append(cin)

        def forward(self, x, edge_index, batch=None, **kw):
            return [self.first(x, edge_index, **kw)]

    register_backbone("test-twice")(Twice)
    try:
        net = GraphNet(GraphNetConfig(backbone="test-twice", channels=8, in_channels=5, out_channels=3))
        out = net(torch.randn(4, 5), torch.tensor([[0, 1], [1, 2]]))
        assert out.shape == (4, 3) and calls == [8]
    finally:
        BACKBONES.pop("test-twice")


@pytest.mark.parametrize("backbone", ["res+", "res", "plain", "dense"])
def test_every_backbone_handles_isolated_nodes_and_empty_graphs(backbone):
    torch.manual_seed(0)
    net = GraphNet(GraphNetConfig(backbone=backbone, layers=3, channels=8, in_channels=4, out_channels=2,
                                  aggr="softmax", learn_t=True)).eval()
    x = torch.randn(5, 4)
    for ei in (torch.tensor([[0], [1]]), torch.zeros(2, 0, dtype=torch.long)):
        assert torch.isfinite(net(x, ei)).all()


def test_virtual_node_model_runs_on_a_batch_of_graphs_and_adds_parameters():
    from ogb.utils.features import get_atom_feature_dims
    base = dict(layers=3, channels=16, in_channels=9, out_channels=2, node_encoder="atom", conv_edge="bond",
                pool="mean", final_act=False)
    plain, vn = GraphNet(GraphNetConfig(**base)), GraphNet(GraphNetConfig(**base, virtual_node=True))
    assert count_parameters(vn) == count_parameters(plain) + 16 + 2 * (16 * 16 + 16 + 2 * 16)
    x = torch.stack([torch.randint(0, d, (7,)) for d in get_atom_feature_dims()], 1)
    ei = torch.tensor([[0, 1, 2, 4, 5], [1, 2, 0, 5, 6]])
    out = vn(x, ei, torch.zeros(5, 3, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_ppi_fusion_head_adds_one_channel_per_node():
    net = build_preset("resmrgcn-28-ppi", layers=2, channels=8)
    first = net.head.prediction[0][0].lin
    assert first.in_channels == 2 * 8 + 1
