"""Task families: how a dataset is fed to a :class:`~graphs.model.GraphNet`, its loss and its metric.

* ``planetoid`` — Cora / CiteSeer / PubMed, public split, full batch, accuracy.
* ``ppi`` — inductive multi-label node classification over graphs, micro-F1.
* ``ogbn`` — full batch (ogbn-arxiv: made undirected, self loops added) or, for ogbn-proteins /
  ogbn-products, random node partitions re-drawn every epoch, evaluated with per-node predictions
  averaged over ``eval_repeats`` fixed partitions (so inference never needs the whole graph). ogbn-proteins node features = sum of incident edge
  features plus the species one-hot.
* ``ogbg`` — mini-batches of graphs, pooled; molecules use integer atom / bond features; graphs
  without node features (ogbg-ppa) get the sum of incident edge features.
* ``tu`` — TU graph classification (PyG's ``TUDataset``), k-fold cross-validation, accuracy.
* ``csv`` — MoleculeNet-style CSV with a SMILES column, scaffold split, ROC-AUC or RMSE.
* ``ogbl`` — node embeddings + :class:`~graphs.model.LinkPredictor`, random negatives, Hits@K.

Metrics of OGB datasets come from ogb's ``Evaluator``. Every family implements the engine's task protocol
(:class:`pointseg.engine.task.Task`: ``train_batches``, ``loss``, ``evaluate``, ``checkpoint_payload``), so
:class:`pointseg.engine.trainer.Trainer` trains them all.
"""
from __future__ import annotations

import math

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import add_self_loops, remove_self_loops, scatter, subgraph, to_undirected

from pointseg.config import from_dict
from pointseg.engine.task import Task
from pointseg.models import count_parameters

from .config import GraphTrainConfig
from .data import dataset_family, load_ogb, load_planetoid, load_ppi, load_tu, ogb_master
from .model import GraphNet, GraphNetConfig, LinkPredictor, gnn_of
from .optim import LinearWarmup, make_optimizer

PARTITIONED = {"ogbn-proteins", "ogbn-products"}
LOWER_IS_BETTER = {"rmse", "mae"}
SPLITS = ("train", "valid", "test")


def _edge_sum_features(data) -> Tensor:
    """Node features = sum of the features of the edges pointing at the node."""
    return scatter(data.edge_attr.float(), data.edge_index[1], dim=0, dim_size=data.num_nodes, reduce="sum")


class GraphTask(Task):
    """A graph family as an engine :class:`~pointseg.engine.task.Task`: the model is a
    :class:`~graphs.model.GraphNet` built from :attr:`net_cfg` (set by :meth:`model_config`), the
    optimizer and linear warm-up come from the training options, and ``evaluate`` gives the family's
    metric on each split; ``best.pt`` is chosen by the ``valid`` split.

    Batches are drawn from the run's generator :attr:`gen` in sequence (re-seeded per run by the
    trainer), not from ``(seed, epoch)``: graph runs are not resumable, and their batches stay those of
    earlier releases.

    Args:
        name (str): the dataset (a Planetoid / TU / OGB name, ``PPI`` or a CSV path).
        root (str): the folder holding it.
        train (GraphTrainConfig): the training options.
        device (torch.device): where data and model live.
    """

    kind, selection_metric = "graph", "valid"
    family = ""
    metric = ""

    def __init__(self, name: str, root: str, train: GraphTrainConfig, device: torch.device) -> None:
        self.name, self.root, self.train_cfg, self.device = name, root, train, device
        self.dataset = name                               # as the user named it (checkpoints, messages)
        self.rank, self.world_size = 0, 1
        self.gen = torch.Generator().manual_seed(0)
        self.net_cfg: GraphNetConfig | None = None
        self.preset, self.run = "", 0

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        return self.metric not in LOWER_IS_BETTER

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    # ---- model
    @abstractmethod
    def data_widths(self) -> dict[str, Any]:
        """``in_channels``, ``out_channels``, ``edge_channels`` (0 = no edge features), ``mol``."""

    def model_config(self, preset: dict[str, Any], overrides: dict[str, Any]) -> GraphNetConfig:
        """The preset's model adapted to (generic) or checked against (fixed) this dataset."""
        w = self.data_widths()
        model = dict(preset["model"])
        generic = preset["dataset"] is None
        if generic:
            model.setdefault("in_channels", w["in_channels"])
            model.setdefault("out_channels", w["out_channels"])
            if w.get("mol"):
                model.update(node_encoder="atom", conv_edge="bond")
            elif w["edge_channels"] and self.family in ("ogbn", "ogbg") and model.get("conv", "gen") == "gen":
                model.update(edge_encoder="linear", conv_edge="linear", edge_channels=w["edge_channels"])
            if self.family in ("ogbg", "tu", "csv"):
                model.setdefault("pool", "mean")
            if self.name == "ogbg-molpcba":
                model["virtual_node"] = True              # DeeperGCN's molpcba model uses a virtual node
            if self.family == "ogbl":
                model["head"] = "none"
        model.update(overrides)
        cfg = from_dict(GraphNetConfig, model, what="graph model option")
        what = f"preset {preset.get('name', '?')!r} (made for {preset['dataset'] or 'any dataset'})"
        if cfg.uses_edge_features and not w["edge_channels"] and not w.get("mol"):
            raise ValueError(f"{what} needs edge features, but {self.name} has none; "
                             "use the generic preset 'deepergcn'")
        if cfg.node_encoder == "atom" and not w.get("mol"):
            raise ValueError(f"{what} uses the OGB AtomEncoder, but {self.name} is not a molecule dataset")
        if cfg.node_encoder != "atom" and cfg.in_channels != w["in_channels"]:
            raise ValueError(f"{what} expects {cfg.in_channels} node input channels, but {self.name} has "
                             f"{w['in_channels']}; use the generic preset 'deepergcn'")
        if cfg.head != "none" and cfg.out_channels != w["out_channels"]:
            raise ValueError(f"{what} predicts {cfg.out_channels} outputs, but {self.name} has "
                             f"{w['out_channels']}; use the generic preset 'deepergcn'")
        if cfg.edge_encoder == "linear" and cfg.edge_channels != w["edge_channels"]:
            raise ValueError(f"{what} expects {cfg.edge_channels} edge channels, {self.name} has {w['edge_channels']}")
        self.net_cfg, self.preset = cfg, str(preset.get("name", ""))
        return cfg

    def build(self, cfg: GraphNetConfig) -> nn.Module:
        return GraphNet(cfg)

    def build_model(self) -> nn.Module:
        if self.net_cfg is None:
            raise ValueError(f"{self.name}: no model config yet (call model_config first)")
        return self.build(self.net_cfg)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return make_optimizer(model, self.train_cfg, self.train_cfg.lr)

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> LinearWarmup:
        t = self.train_cfg
        return LinearWarmup(optimizer, t.warmup_epochs, t.lr_step, t.lr_gamma)

    def epoch_scalars(self, loss: float, metrics: dict[str, Any] | None) -> dict[str, float]:
        return {"loss/train": loss, **{f"{self.metric}/{split}": v for split, v in (metrics or {}).items()}}

    def checkpoint_payload(self, model: nn.Module) -> dict[str, Any]:
        from pointseg.config import to_dict
        return {"kind": self.kind, "dataset": self.dataset, "root": str(self.root), "family": self.family,
                "metric": self.metric, "preset": self.preset, "run": self.run,
                "model_config": self.net_cfg.to_dict(), "train_config": to_dict(self.train_cfg),
                "params": count_parameters(gnn_of(model)),
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}

    def describe(self) -> str:
        """One line about how the data is fed (printed at the start of training); empty if nothing to say."""
        return ""

    def chance(self) -> tuple[dict[str, float], str] | None:
        """The score per split (``valid`` / ``test``) of a predictor that learnt nothing from the inputs
        (a constant fitted on the training labels: the majority class, a constant score, the training mean),
        and what that predictor is; ``None`` when this family has no such figure. A run whose best score is
        no better is flagged (:func:`graphs.train.chance_check`)."""
        return None

    def num_folds(self) -> int:
        """Cross-validation folds (one training run per fold), or 0 for a fixed split."""
        return 0

    def set_fold(self, fold: int) -> None:
        raise ValueError(f"{self.name} has a fixed split, no folds")

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metric per split (``train`` / ``valid`` / ``test``)."""

    def _ogb_eval(self, y_true: Tensor, y_pred: Tensor) -> float:
        from ogb.graphproppred import Evaluator as GE
        from ogb.linkproppred import Evaluator as LE
        from ogb.nodeproppred import Evaluator as NE
        ev = {"ogbn": NE, "ogbg": GE, "ogbl": LE}[self.family](self.name)
        return float(ev.eval({"y_true": y_true.cpu().numpy(), "y_pred": y_pred.cpu().numpy()})[ev.eval_metric])


def log_cross_entropy(logits: Tensor, y: Tensor, eps: float = 1.0 - math.log(2.0)) -> Tensor:
    r"""Mean over nodes of :math:`\log(\varepsilon + \mathrm{CE}_i) - \log \varepsilon`,
    :math:`\varepsilon = 1 - \ln 2` (the arXiv GAT / RevGAT training loss: it damps confidently wrong
    nodes' gradients relative to plain cross-entropy)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return (torch.log(eps + ce) - math.log(eps)).mean()


NODE_LOSSES = {"ce", "log_ce"}


def _node_loss(logits: Tensor, y: Tensor, multilabel: bool) -> Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y.view(-1))


def row_normalize(x: Tensor) -> Tensor:
    """Each row divided by its sum; all-zero rows stay zero (Kipf & Welling's ``preprocess_features``;
    unlike PyG's ``NormalizeFeatures`` it neither shifts by the minimum nor leaves rows summing below 1)."""
    s = x.sum(dim=-1, keepdim=True)
    return torch.where(s != 0, x / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(x))


class PlanetoidTask(GraphTask):
    r"""Transductive node classification on a Planetoid citation graph, public split, full batch.

    One step per epoch on the whole graph: cross-entropy over the training nodes,
    :math:`\mathcal{L} = -\frac{1}{|V_{tr}|}\sum_{v \in V_{tr}} \log \mathrm{softmax}(f(X, A))_{v, y_v}`.
    Train option ``normalize_features`` (default true, every preset): node features are row-normalised
    first, as in Kipf & Welling's Planetoid protocol.

    Args:
        name (str): ``cora``, ``citeseer`` or ``pubmed``.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``normalize_features``).
        device (torch.device): where data and model live.

    Shapes:
        - **input:** node features :math:`(|V|, F)`, ``edge_index`` :math:`(2, |E|)`
        - **output:** logits :math:`(|V|, C)`
        - **metric:** accuracy (``acc``) on the train / val / test masks
    """

    family, metric = "planetoid", "acc"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.data = load_planetoid(self.name, self.root)[0].to(self.device)
        self.normalize_features = self.train_cfg.normalize_features
        if self.normalize_features:
            self.data.x = row_normalize(self.data.x)

    def describe(self) -> str:
        return ("features row-normalised (normalize_features=true)" if self.normalize_features
                else "raw features (normalize_features=false)")

    def data_widths(self) -> dict[str, Any]:
        return dict(in_channels=self.data.num_features, out_channels=int(self.data.y.max()) + 1, edge_channels=0)

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> list[None]:
        return [None][start:]                             # full batch: one step per epoch

    def chance(self) -> tuple[dict[str, float], str]:
        y = self.data.y.cpu()
        major = int(torch.bincount(y[self.data.train_mask.cpu()]).argmax())
        rates = {split: float((y[mask.cpu()] == major).float().mean()) if mask.any() else float("nan")
                 for split, mask in (("valid", self.data.val_mask), ("test", self.data.test_mask))}
        return rates, f"majority-class rate (always predicting class {major}, the most frequent training class)"

    def loss(self, model: nn.Module, batch: None) -> Tensor:
        out = model(self.data.x, self.data.edge_index)
        return F.cross_entropy(out[self.data.train_mask], self.data.y[self.data.train_mask])

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        pred = model(self.data.x, self.data.edge_index).argmax(-1)
        res = {}
        for split, mask in (("train", self.data.train_mask), ("valid", self.data.val_mask), ("test", self.data.test_mask)):
            res[split] = float((pred[mask] == self.data.y[mask]).float().mean()) if mask.any() else float("nan")
        return res


class PPITask(GraphTask):
    r"""Inductive multi-label node classification over the PPI graphs (121 labels per node).

    Mini-batches of whole graphs (``batch_size``, default 1); loss: mean binary cross-entropy over nodes
    and labels, :math:`\mathcal{L} = \frac{1}{|V| T}\sum_{v,t} \mathrm{BCE}(f(X, A)_{v,t}, y_{v,t})`.

    Args:
        name (str): ``PPI``.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``batch_size``).
        device (torch.device): where data and model live.

    Shapes:
        - **input:** node features :math:`(|V_b|, 50)`, ``edge_index`` :math:`(2, |E_b|)`, ``batch`` :math:`(|V_b|)`
        - **output:** logits :math:`(|V_b|, 121)`
        - **metric:** micro-F1 of :math:`f > 0` over every node and label of each split
    """

    family, metric = "ppi", "micro-F1"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.splits = load_ppi(self.root)

    def data_widths(self) -> dict[str, Any]:
        d = self.splits["train"]
        return dict(in_channels=d.num_features, out_channels=d.num_classes, edge_channels=0)

    def _loader(self, split: str, shuffle: bool):
        from torch_geometric.loader import DataLoader
        return DataLoader(self.splits[split], batch_size=self.train_cfg.batch(1), shuffle=shuffle,
                          generator=self.gen if shuffle else None)

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> Iterable[Any]:
        return self._loader("train", True)

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        batch = batch.to(self.device)
        out = model(batch.x, batch.edge_index, batch=batch.batch)
        return F.binary_cross_entropy_with_logits(out, batch.y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from sklearn.metrics import f1_score
        model.eval()
        res = {}
        for split, key in (("train", "train"), ("valid", "val"), ("test", "test")):
            ys, ps = [], []
            for batch in self._loader(key, False):
                batch = batch.to(self.device)
                ps.append((model(batch.x, batch.edge_index, batch=batch.batch) > 0).cpu())
                ys.append(batch.y.cpu())
            res[split] = float(f1_score(torch.cat(ys).numpy(), torch.cat(ps).numpy(), average="micro", zero_division=0))
        return res


class OgbNodeTask(GraphTask):
    r"""OGB node property prediction (``ogbn-*``): full batch (ogbn-arxiv: made undirected, self loops
    added) or, for ogbn-proteins / ogbn-products, ``parts`` random node partitions re-drawn every epoch
    (one optimizer step per partition's induced subgraph), evaluated with per-node predictions averaged
    over ``eval_repeats`` fixed partitions of ``eval_parts``.

    Loss over the training nodes: cross-entropy (multi-class; ``loss=log_ce`` gives
    :func:`log_cross_entropy`) or binary cross-entropy (multi-label). With ``use_labels`` the one-hot labels
    of a random ``label_rate`` of the training nodes are extra inputs (and ``label_iters`` rounds of label
    reuse fill the others with the model's softmax).

    Args:
        name (str): an ``ogbn-*`` dataset.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``parts``, ``eval_parts``, ``eval_repeats``, ``use_labels``, ``label_rate``, ``label_iters``, ``loss``).
        device (torch.device): where data and model live.

    Shapes:
        - **input:** node features :math:`(|V_p|, F [+ C])`, ``edge_index`` :math:`(2, |E_p|)`, edge features
          :math:`(|E_p|, D)` (ogbn-proteins)
        - **output:** :math:`(|V_p|, C)` logits (or :math:`T` task logits)
        - **metric:** ogb's ``Evaluator`` metric (accuracy, ROC-AUC) per split
    """

    family = "ogbn"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        ds = load_ogb(self.name, self.root)
        self.metric = ds.eval_metric
        self.multilabel = "binary" in ds.task_type
        self.num_out = int(ds.num_tasks) if self.multilabel else int(ds.num_classes)
        data = ds[0]
        split = ds.get_idx_split()
        self.split = {k: torch.as_tensor(v, dtype=torch.long) for k, v in split.items()}
        if getattr(data, "x", None) is None:
            if data.edge_attr is None:
                data.x = torch.ones(data.num_nodes, 1)
            else:
                data.x = _edge_sum_features(data)
            species = getattr(data, "node_species", None)
            if species is not None:                      # ogbn-proteins: + species one-hot
                _, ids = torch.unique(species.view(-1), return_inverse=True)
                data.x = torch.cat([data.x, F.one_hot(ids, 8 if int(ids.max()) < 8 else int(ids.max()) + 1).float()], 1)
        data.x = data.x.float()
        # Label inputs (the arXiv GAT / RevGAT trick): the one-hot training labels of some nodes are extra
        # input channels. Each training epoch feeds the labels of a random ``label_rate`` of the training nodes
        # (one Bernoulli draw per node) and learns on the others; evaluation feeds every training label. With
        # ``label_iters`` the label channels of the other nodes are then filled with the model's own softmax
        # predictions that many times (label reuse), without gradients, before the forward that counts.
        t = self.train_cfg
        self.use_labels, self.label_rate, self.label_iters, self.loss_kind = (
            t.use_labels, t.label_rate, t.label_iters, t.loss)
        kind = "multi-label" if self.multilabel else "multi-class"
        if self.use_labels and (self.multilabel or not 0.0 < self.label_rate < 1.0):
            raise ValueError(f"use_labels needs a multi-class task and 0 < label_rate < 1 ({self.name}: "
                             f"{kind}, label_rate={self.label_rate})")
        if self.label_iters and (not self.use_labels or self.name in PARTITIONED or self.label_iters < 0):
            raise ValueError(f"label_iters={self.label_iters} needs use_labels=true and a task trained on the "
                             f"whole graph ({self.name})")
        if self.loss_kind not in NODE_LOSSES or (self.loss_kind == "log_ce" and self.multilabel):
            raise ValueError(f"train option loss must be one of {sorted(NODE_LOSSES)} (log_ce: multi-class "
                             f"only), got {self.loss_kind!r} for {kind} {self.name}")
        self.partitioned = self.name in PARTITIONED
        if not self.partitioned:
            ei = to_undirected(data.edge_index, num_nodes=data.num_nodes)
            ei, _ = remove_self_loops(ei)
            data.edge_index, _ = add_self_loops(ei, num_nodes=data.num_nodes)
            data.edge_attr = None
        self.data = data

    def data_widths(self) -> dict[str, Any]:
        ea = self.data.edge_attr
        return dict(in_channels=self.data.x.shape[1] + (self.num_out if self.use_labels else 0),
                    out_channels=self.num_out,
                    edge_channels=0 if ea is None else ea.view(ea.shape[0], -1).shape[1])

    def _inputs(self, label_nodes: Tensor | None) -> Tensor:
        """Node inputs: the features, and with ``use_labels`` the one-hot labels of ``label_nodes``."""
        if not self.use_labels:
            return self.data.x
        onehot = torch.zeros(self.data.num_nodes, self.num_out)
        onehot[label_nodes] = F.one_hot(self.data.y.view(-1)[label_nodes], self.num_out).float()
        return torch.cat([self.data.x, onehot], dim=1)

    def _forward(self, model: nn.Module, nodes: Tensor | None, x_all: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Model output on the subgraph induced by ``nodes`` (all nodes if None) and the node ids."""
        d = self.data
        if nodes is None:
            nodes = torch.arange(d.num_nodes)
            ei, ea = d.edge_index, d.edge_attr
        else:
            ei, ea = subgraph(nodes, d.edge_index, d.edge_attr, relabel_nodes=True, num_nodes=d.num_nodes)
        x = (d.x if x_all is None else x_all)[nodes].to(self.device)
        ea = ea.float().to(self.device) if ea is not None else None
        return model(x, ei.to(self.device), ea), nodes

    def _parts(self, k: int, gen: torch.Generator) -> list[Tensor]:
        assign = torch.randint(0, k, (self.data.num_nodes,), generator=gen)
        return [torch.nonzero(assign == i).view(-1) for i in range(k) if (assign == i).any()]

    def _masked_loss(self, out: Tensor, nodes: Tensor, mask: Tensor) -> Tensor:
        y = self.data.y[nodes][mask].to(self.device)
        if self.loss_kind == "log_ce":
            return log_cross_entropy(out[mask], y.view(-1))
        return _node_loss(out[mask], y, self.multilabel)

    def _reuse_labels(self, model: nn.Module, x_all: Tensor, unlabeled: Tensor) -> Tensor:
        """``label_iters`` times: the label channels of ``unlabeled`` nodes <- softmax of the prediction."""
        x_all = x_all.clone()
        for _ in range(self.label_iters):
            with torch.no_grad():
                pred = self._forward(model, None, x_all)[0].cpu()
            x_all[unlabeled, -self.num_out:] = pred[unlabeled].softmax(-1)
        return x_all

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> Iterator[tuple]:
        """``(nodes, inputs, train_mask)`` per partition (one, ``nodes=None``, for a whole graph); the label
        inputs of the epoch are drawn (and reused through ``model``) when the first batch is taken."""
        train_mask = torch.zeros(self.data.num_nodes, dtype=torch.bool)
        train_mask[self.split["train"]] = True
        x_all = None
        if self.use_labels:                      # a fresh random subset of the training labels as input
            train = self.split["train"]
            fed = torch.rand(len(train), generator=self.gen) < self.label_rate
            train_mask[train[fed]] = False
            x_all = self._inputs(train[fed])
            if self.label_iters:
                x_all = self._reuse_labels(model, x_all, torch.cat([train[~fed], self.split["valid"],
                                                                    self.split["test"]]))
        parts = self._parts(self.train_cfg.parts, self.gen) if self.partitioned else [None]
        for nodes in parts[start:]:
            yield nodes, x_all, train_mask

    def loss(self, model: nn.Module, batch: tuple) -> Tensor | None:
        nodes, x_all, train_mask = batch
        out, ids = self._forward(model, nodes, x_all)
        mask = train_mask[ids].to(self.device)
        return self._masked_loss(out, ids, mask) if mask.any() else None

    @torch.no_grad()
    def predict(self, model: nn.Module) -> Tensor:
        model.eval()
        x_all = self._inputs(self.split["train"]) if self.use_labels else None
        if self.label_iters:
            x_all = self._reuse_labels(model, x_all, torch.cat([self.split["valid"], self.split["test"]]))
        if not self.partitioned:
            return self._forward(model, None, x_all)[0].cpu()
        # ``eval_repeats`` fixed partitions (seeds 12345, 12346, ...: the same every call, so evaluations are
        # comparable); each node's prediction is the mean over them, which evens out the edges a single
        # partition cuts. Multi-label outputs are averaged as probabilities, multi-class ones as softmax.
        repeats = self.train_cfg.eval_repeats
        if repeats < 1:
            raise ValueError(f"train option eval_repeats must be >= 1, got {repeats}")
        out = torch.zeros(self.data.num_nodes, self.num_out)
        for r in range(repeats):
            for nodes in self._parts(self.train_cfg.eval_parts, torch.Generator().manual_seed(12345 + r)):
                logits = self._forward(model, nodes, x_all)[0].cpu()
                out[nodes] += torch.sigmoid(logits) if self.multilabel else logits.softmax(-1)
        return out / repeats

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = self.predict(model)
        y = self.data.y
        res = {}
        for split in ("train", "valid", "test"):
            idx = self.split[split]
            pred = out[idx] if self.multilabel else out[idx].argmax(-1, keepdim=True)
            res[split] = self._ogb_eval(y[idx].view(len(idx), -1), pred)
        return res


class GraphBatchTask(GraphTask):
    r"""Graph-level prediction trained and evaluated over mini-batches of graphs (pooled node features).

    Subclasses give ``_loader(split, shuffle)``, ``_run(model, batch)`` (graph outputs) and ``target_kind``;
    a training batch of a single graph is skipped when the model has BatchNorm.

    Args:
        name (str): the dataset.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``batch_size``).
        device (torch.device): where data and model live.

    Shapes:
        - **input:** a PyG ``Batch`` of :math:`G` graphs
        - **output:** :math:`(G, T)` graph outputs
    """

    target_kind = "multiclass"                            # multiclass | binary | regression

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> Iterator[Any]:
        batch_norm = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
        for batch in self._loader("train", True):
            if batch.num_graphs < 2 and batch_norm:
                continue                                  # BatchNorm cannot train on one graph of 1 node
            yield batch

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        return self._loss(self._run(model, batch), batch.y.to(self.device))

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy (``multiclass``), MSE (``regression``) or BCE (``binary``) on the labelled entries."""
        if self.target_kind == "multiclass":
            return F.cross_entropy(out, y.view(-1).long())
        y = y.view(out.shape).float()
        labeled = y == y                                  # NaN = missing label
        if self.target_kind == "regression":
            return F.mse_loss(out[labeled], y[labeled])
        return F.binary_cross_entropy_with_logits(out[labeled], y[labeled])

    def _collect(self, model: nn.Module, split: str) -> tuple[Tensor, Tensor]:
        """Labels ``(G, T)`` and model outputs of every graph of ``split``, on the CPU."""
        ys, outs = [], []
        for batch in self._loader(split, False):
            out = self._run(model, batch).cpu()
            outs.append(out)
            ys.append(batch.y.view(len(out), -1))
        return torch.cat(ys), torch.cat(outs)


class OgbGraphTask(GraphBatchTask):
    r"""OGB graph property prediction (``ogbg-*``): molecules with integer atom / bond features
    (AtomEncoder / BondEncoder), other graphs with float features (ogbg-ppa: node features = sum of incident
    edge features). Loss: cross-entropy (multi-class), BCE or MSE on the labelled entries (NaN = missing).

    Args:
        name (str): an ``ogbg-*`` dataset.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``batch_size``, default 32).
        device (torch.device): where data and model live.

    Shapes:
        - **output:** :math:`(G, C)` logits or :math:`(G, T)` task outputs
        - **metric:** ogb's ``Evaluator`` metric (ROC-AUC, AP, accuracy, RMSE) per split
    """

    family = "ogbg"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        meta = ogb_master("ogbg").get(self.name, {})
        self.mol = meta.get("data type") == "mol"
        ds = load_ogb(self.name, self.root, transform=None if self.mol else self._edge_features)
        self.ds = ds
        self.metric = ds.eval_metric
        self.task_type = ds.task_type
        self.target_kind = next((k for k in ("multiclass", "regression") if k in ds.task_type), "binary")
        self.num_out = int(ds.num_classes) if "multiclass" in ds.task_type else int(ds.num_tasks)
        self.split = {k: torch.as_tensor(v, dtype=torch.long) for k, v in ds.get_idx_split().items()}

    @staticmethod
    def _edge_features(data):
        if getattr(data, "x", None) is None:
            data.x = _edge_sum_features(data) if data.edge_attr is not None else torch.ones(data.num_nodes, 1)
        return data

    def data_widths(self) -> dict[str, Any]:
        d = self.ds[0]
        ea = d.edge_attr
        return dict(in_channels=d.x.shape[1], out_channels=self.num_out, mol=self.mol,
                    edge_channels=0 if ea is None else ea.view(ea.shape[0], -1).shape[1])

    def _loader(self, split: str, shuffle: bool):
        from torch_geometric.loader import DataLoader
        return DataLoader(self.ds[self.split[split]], batch_size=self.train_cfg.batch(32),
                          shuffle=shuffle, generator=self.gen if shuffle else None)

    def _run(self, model: nn.Module, batch) -> Tensor:
        batch = batch.to(self.device)
        x = batch.x if self.mol else batch.x.float()
        ea = batch.edge_attr if (self.mol or batch.edge_attr is None) else batch.edge_attr.float()
        return model(x, batch.edge_index, ea, batch.batch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        res = {}
        for split in ("train", "valid", "test"):
            y, out = self._collect(model, split)
            res[split] = self._ogb_eval(y, out.argmax(-1, keepdim=True) if self.target_kind == "multiclass" else out)
        return res


class GraphListTask(GraphBatchTask):
    """Graph-level prediction on a list of graphs with index splits ``self.split`` (train / valid / test).

    Subclasses set ``graphs``, ``split``, ``target_kind`` (``multiclass`` | ``binary`` | ``regression``),
    ``num_out``, ``mol`` and ``metric``; loss: cross-entropy / BCE on labelled entries / MSE on labelled
    entries; metric: accuracy / mean ROC-AUC over targets / mean RMSE over targets.

    Args:
        name (str): the dataset.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``batch_size``, default 32).
        device (torch.device): where data and model live.

    Shapes:
        - **output:** :math:`(G, C)` logits (multiclass) or :math:`(G, T)` target outputs
        - **metric:** ``acc``, ``rocauc`` (higher is better) or ``rmse`` (lower is better) per split
    """

    graphs: list
    mol = False

    def data_widths(self) -> dict[str, Any]:
        return dict(in_channels=self.graphs[0].x.shape[1], out_channels=self.num_out, mol=self.mol, edge_channels=0)

    def _loader(self, split: str, shuffle: bool):
        from torch_geometric.loader import DataLoader
        return DataLoader([self.graphs[i] for i in self.split[split]], batch_size=self.train_cfg.batch(32),
                          shuffle=shuffle, generator=self.gen if shuffle else None)

    def _run(self, model: nn.Module, batch) -> Tensor:
        batch = batch.to(self.device)
        x = batch.x if self.mol else batch.x.float()
        return model(x, batch.edge_index, batch.edge_attr if self.mol else None, batch.batch)

    def score(self, y: np.ndarray, out: np.ndarray) -> float:
        if self.target_kind == "multiclass":
            return float((out.argmax(-1) == y.reshape(-1)).mean())
        vals = []
        for t in range(y.shape[1]):
            lab = ~np.isnan(y[:, t])
            if self.target_kind == "regression":
                if lab.any():
                    vals.append(float(np.sqrt(np.mean((out[lab, t] - y[lab, t]) ** 2))))
            elif lab.any() and len(np.unique(y[lab, t])) == 2:       # ROC-AUC needs both classes
                from sklearn.metrics import roc_auc_score
                vals.append(float(roc_auc_score(y[lab, t], out[lab, t])))
        return float(np.mean(vals)) if vals else float("nan")

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        res = {}
        for split in ("train", "valid", "test"):
            if not len(self.split[split]):
                res[split] = float("nan")
                continue
            y, out = self._collect(model, split)
            res[split] = self.score(y.float().numpy(), out.numpy())
        return res

    def _labels(self, split: str) -> np.ndarray:
        """Labels ``(G, T)`` of ``split`` (NaN = missing)."""
        ids = list(self.split[split])
        if not ids:
            return np.zeros((0, 1), dtype=np.float32)
        return torch.cat([self.graphs[i].y.view(1, -1).float() for i in ids]).numpy()

    def chance(self) -> tuple[dict[str, float], str]:
        """The metric of a constant prediction fitted on the training labels, scored by :meth:`score` itself:
        the majority class (accuracy = majority-class rate), a constant score (ROC-AUC 0.5) or the training
        mean of each target (RMSE of the mean)."""
        y_train = self._labels("train")
        if self.target_kind == "multiclass":
            major = int(np.bincount(y_train.reshape(-1).astype(np.int64)).argmax())
            const = np.eye(self.num_out, dtype=np.float32)[major]
            what = f"majority-class rate (always predicting class {major}, the most frequent training class)"
        elif self.target_kind == "binary":
            const = np.zeros(self.num_out, dtype=np.float32)
            what = "ROC-AUC of a constant score"
        else:
            const = np.nanmean(y_train, axis=0).astype(np.float32)
            what = "RMSE of predicting the training mean"
        rates = {}
        for split in ("valid", "test"):
            y = self._labels(split)
            rates[split] = self.score(y, np.tile(const, (len(y), 1))) if len(y) else float("nan")
        return rates, what


class TUTask(GraphListTask):
    """TU graph classification (PyG's ``TUDataset``), accuracy, ``folds``-fold stratified cross-validation
    (default 10; folds drawn once with seed 0, so every run / fold uses the same partition). Each run trains on
    one fold's complement, of which a stratified 10 % (seed 0) is held out as validation for model selection
    (and early stopping, train option ``patience``), and tests on the fold: the protocol of Errica et al.
    (ICLR'20). Node inputs: the continuous node attributes when the dataset has them, beside the one-hot node
    labels (``use_node_attr``, default true; false keeps the labels only); a dataset with neither gets its
    one-hot node degree (capped at 64). Edge labels are not used.

    Args:
        name (str): a TU dataset (``MUTAG``, ``ENZYMES``, ...).
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``folds``, ``use_node_attr``, ``batch_size``).
        device (torch.device): where data and model live.

    Shapes:
        - **output:** :math:`(G, C)` class logits
        - **metric:** accuracy (``acc``) on the fold (test), its held-out 10 % (valid) and the rest (train)
    """

    family, metric, target_kind = "tu", "acc", "multiclass"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        from torch_geometric.utils import degree
        ds = load_tu(self.name, self.root, self.train_cfg.use_node_attr)
        graphs = [ds[i] for i in range(len(ds))]
        self.node_attrs = ds.num_node_attributes if self.train_cfg.use_node_attr else 0
        self.node_labels = ds.num_node_labels
        self.skipped_attrs = ds.num_node_attributes if not self.train_cfg.use_node_attr else 0
        if graphs[0].x is None:
            self.inputs = "one-hot node degree (no node labels or attributes)"
            degs = [degree(g.edge_index[1], g.num_nodes).long().clamp(max=64) for g in graphs]
            width = int(max(int(d.max()) if d.numel() else 0 for d in degs)) + 1
            for g, d in zip(graphs, degs):
                g.x = F.one_hot(d, width).float()
        else:
            parts = [f"{self.node_attrs} node attributes"] if self.node_attrs else []
            parts += [f"{self.node_labels} one-hot node labels"] if self.node_labels else []
            self.inputs = " + ".join(parts)
            if self.skipped_attrs:
                self.inputs += f" ({self.skipped_attrs} node attributes left out: use_node_attr=false)"
        self.graphs = graphs
        self.labels = np.array([int(g.y) for g in graphs])
        self.num_out = int(self.labels.max()) + 1
        self.folds = self.train_cfg.folds
        if not 2 <= self.folds <= len(graphs):
            raise ValueError(f"train option folds must be in 2..{len(graphs)} for {self.name}, got {self.folds}")
        from sklearn.model_selection import StratifiedKFold
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # classes smaller than the fold count
            self.fold_splits = list(StratifiedKFold(self.folds, shuffle=True, random_state=0).split(
                np.zeros(len(graphs)), self.labels))
        self.set_fold(0)

    def describe(self) -> str:
        return (f"{len(self.graphs)} graphs, {self.num_out} classes, node inputs {self.inputs}; {self.folds}-fold "
                "stratified cross-validation (one run per fold; valid = a stratified 10 % of the training folds)")

    def num_folds(self) -> int:
        return self.folds

    def set_fold(self, fold: int) -> None:
        from sklearn.model_selection import train_test_split
        rest, test = self.fold_splits[fold]
        try:
            train, valid = train_test_split(rest, test_size=0.1, random_state=0, stratify=self.labels[rest])
        except ValueError:                                 # a class too small to stratify
            train, valid = train_test_split(rest, test_size=0.1, random_state=0)
        self.split = {"train": np.sort(train).tolist(), "valid": np.sort(valid).tolist(), "test": test.tolist()}


class MoleculeCsvTask(GraphListTask):
    """A MoleculeNet-style CSV (``name`` = its path): molecules from the SMILES column through ogb's
    ``smiles2graph`` (AtomEncoder / BondEncoder inputs), Bemis-Murcko scaffold split 80 / 10 / 10. Targets
    whose labelled values are all 0 / 1 are binary classification (mean ROC-AUC over targets), any other
    numeric target regression (mean RMSE); empty cells are missing labels.

    Args:
        name (str): the CSV path.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``smiles_column``, ``target``, ``skip_invalid_smiles``, ``batch_size``).
        device (torch.device): where data and model live.

    Shapes:
        - **output:** :math:`(G, T)`, one output per target column
        - **metric:** mean ROC-AUC (``rocauc``) or mean RMSE (``rmse``, lower is better) over the targets
    """

    family, mol = "csv", True

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        from .data import load_molecule_csv, scaffold_split
        t = self.train_cfg
        targets = [c for c in t.target.split(",") if c]
        self.graphs, smiles, self.skipped = load_molecule_csv(self.name, t.smiles_column, targets,
                                                              t.skip_invalid_smiles)
        self.targets = targets
        y = torch.cat([g.y for g in self.graphs]).numpy()
        lab = y[~np.isnan(y)]
        self.target_kind = "binary" if lab.size and np.isin(lab, (0.0, 1.0)).all() else "regression"
        self.metric = "rocauc" if self.target_kind == "binary" else "rmse"
        self.num_out = len(targets)
        self.split = scaffold_split(smiles)

    def describe(self) -> str:
        n = {k: len(v) for k, v in self.split.items()}
        skipped = f", skipped {len(self.skipped)} invalid SMILES (lines {self.skipped[:10]})" if self.skipped else ""
        return (f"{len(self.graphs)} molecules, targets {self.targets} ({self.target_kind}, {self.metric}), scaffold split "
                f"{n['train']} / {n['valid']} / {n['test']}{skipped}")


class LinkModel(nn.Module):
    """GNN (node embeddings) + link predictor; ``gnn`` alone is what presets count."""

    def __init__(self, gnn: GraphNet, predictor: LinkPredictor) -> None:
        super().__init__()
        self.gnn, self.predictor = gnn, predictor


class OgbLinkTask(GraphTask):
    r"""OGB link prediction (``ogbl-*``): node embeddings :math:`h = \mathrm{GNN}(X, A)` scored by a
    :class:`~graphs.model.LinkPredictor` :math:`s(u, v)`. Each batch of ``batch_size`` positive training edges
    (default 65536) is paired with as many uniformly random node pairs as negatives:
    :math:`\mathcal{L} = -\overline{\log \sigma(s(e))} - \overline{\log \sigma(-s(e'))}`.

    Args:
        name (str): an ``ogbl-*`` dataset.
        root (str): the folder holding it.
        train (GraphTrainConfig): training options (``batch_size``, ``predictor_layers``).
        device (torch.device): where data and model live.

    Shapes:
        - **input:** node features :math:`(|V|, F)`, ``edge_index`` :math:`(2, |E|)`, a batch of edges :math:`(E_b, 2)`
        - **output:** edge scores :math:`(E_b)`
        - **metric:** ogb's ``Evaluator`` metric (Hits@K) per split; "train" scores as many training edges as
          there are validation edges, against the validation negatives
    """

    family = "ogbl"

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        ds = load_ogb(self.name, self.root)
        self.metric = ds.eval_metric
        self.data = ds[0]
        if getattr(self.data, "x", None) is None:
            self.data.x = torch.ones(self.data.num_nodes, 1)
        self.data.x = self.data.x.float()
        self.split = ds.get_edge_split()

    def data_widths(self) -> dict[str, Any]:
        return dict(in_channels=self.data.x.shape[1], out_channels=1, edge_channels=0)

    def build(self, cfg: GraphNetConfig) -> nn.Module:
        gnn = GraphNet(cfg)
        return LinkModel(gnn, LinkPredictor(gnn.out_channels, self.train_cfg.predictor_layers,
                                            cfg.dropout))

    def _edges(self, split: str, key: str = "edge") -> Tensor:
        e = self.split[split][key]
        return torch.as_tensor(e, dtype=torch.long)

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> Iterator[Tensor]:
        """Batches of positive training edges ``(E_b, 2)`` in a fresh random order."""
        pos = self._edges("train")
        for perm in torch.randperm(len(pos), generator=self.gen).split(self.train_cfg.batch(64 * 1024)):
            yield pos[perm]

    def loss(self, model: nn.Module, pos: Tensor) -> Tensor:
        """``-log σ(s(e)) - log σ(-s(e'))`` over the positive edges ``e`` and as many random negatives ``e'``."""
        h = model.gnn(self.data.x.to(self.device), self.data.edge_index.to(self.device))
        e = pos.to(self.device)
        neg = torch.randint(0, self.data.num_nodes, e.shape, generator=self.gen).to(self.device)
        p = model.predictor(h[e[:, 0]], h[e[:, 1]])
        n = model.predictor(h[neg[:, 0]], h[neg[:, 1]])
        return -F.logsigmoid(p).mean() - F.logsigmoid(-n).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        h = model.gnn(self.data.x.to(self.device), self.data.edge_index.to(self.device))

        def score(e: Tensor) -> Tensor:
            e = e.to(self.device)
            return torch.sigmoid(model.predictor(h[e[:, 0]], h[e[:, 1]])).cpu()

        from ogb.linkproppred import Evaluator
        ev = Evaluator(self.name)
        res = {}
        valid_neg = score(self._edges("valid", "edge_neg"))
        n_valid = len(self._edges("valid"))
        train_pos = self._edges("train")[torch.randperm(len(self._edges("train")), generator=torch.Generator().manual_seed(0))[:n_valid]]
        for split, pos, neg in (("train", train_pos, valid_neg),
                                ("valid", self._edges("valid"), valid_neg),
                                ("test", self._edges("test"), score(self._edges("test", "edge_neg")))):
            out = ev.eval({"y_pred_pos": score(pos), "y_pred_neg": neg})
            res[split] = float(out[ev.eval_metric] if ev.eval_metric in out else next(iter(out.values())))
        return res


TASKS = {"planetoid": PlanetoidTask, "ppi": PPITask, "ogbn": OgbNodeTask, "ogbg": OgbGraphTask, "ogbl": OgbLinkTask,
         "tu": TUTask, "csv": MoleculeCsvTask}


def make_task(name: str, root: str, train: GraphTrainConfig | dict[str, Any], device: torch.device) -> GraphTask:
    """The task of dataset ``name``'s family; ``train`` as options or a mapping of them (checked by name)."""
    if not isinstance(train, GraphTrainConfig):
        train = from_dict(GraphTrainConfig, train, what="training option")
    family = dataset_family(name, root)
    task = TASKS[family](name.lower() if family == "planetoid" else name, root, train, device)
    task.dataset = name
    return task
