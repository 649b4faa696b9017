"""Training options of a graph run: a typed dataclass filled by :mod:`pointseg.config` from a preset's
``train`` mapping plus ``--train-set key=value`` overrides (YAML values; unknown keys refused by name)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class GraphTrainConfig:
    """Every training option a preset or ``--train-set`` may give (read by the trainer and the tasks)."""

    lr: float = 0.01
    epochs: int = 100
    optimizer: Literal["adam", "rmsprop"] = "adam"   # RevGAT's reference uses RMSprop
    weight_decay: float = 0.0
    weight_decay_scope: Literal["all", "first"] = "all"   # first: only the GNN's first layer (Kipf & Welling)
    warmup_epochs: int = 0             # linear learning-rate warm-up over the first epochs
    lr_step: int = 0                   # > 0: learning rate x lr_gamma every lr_step epochs (StepLR)
    lr_gamma: float = 0.5
    # > 0: stop a run once the validation score has not reached its best for this many epochs (the
    # Errica et al. protocol's early stopping); best.pt stays the best validation epoch either way
    patience: int = 0
    batch_size: int | None = None      # None: the family's default (PPI 1, graph lists 32, ogbl 65536)
    # ogbn-proteins / ogbn-products: random node partitions
    parts: int = 10
    eval_parts: int = 5
    eval_repeats: int = 3
    # ogbl
    predictor_layers: int = 3
    # ogbn label inputs (the arXiv GAT / RevGAT trick)
    use_labels: bool = False
    label_rate: float = 0.5
    label_iters: int = 0
    loss: Literal["ce", "log_ce"] = "ce"   # log_ce: multi-class node tasks
    # Planetoid
    normalize_features: bool = True
    # TU: continuous node attributes beside the one-hot node labels (ENZYMES: 18 + 3 = 21 inputs, as the
    # Errica et al. protocol feeds it); false keeps only the node labels
    use_node_attr: bool = True
    folds: int = 10
    # CSV molecules
    smiles_column: str = "smiles"
    target: str = ""                   # comma-separated target columns
    skip_invalid_smiles: bool = False

    def batch(self, default: int) -> int:
        """``batch_size``, or the family's ``default`` when unset."""
        return self.batch_size if self.batch_size is not None else default
