"""Tiny datasets written in each loader's own public on-disk format (no download, no network).

* Planetoid: the 8 ``ind.<name>.*`` files (pickled scipy / numpy objects + ``test.index`` text).
* PPI: ``{train,valid,test}_{graph.json,feats.npy,labels.npy,graph_id.npy}`` (networkx node-link json).
* OGB: written with ``ogb.io.DatasetSaver`` (binary ``raw/data.npz``, ``split/<name>/split_dict.pt``,
  ``RELEASE_v1.txt``) plus its ``meta_dict.pt``, completed with the fields of ogb's master table
  that DatasetSaver leaves at defaults (additional node / edge files, inverse edges).

Every graph is class-separable: node features carry the class and edges mostly join nodes of the
same class, so a model that learns anything beats chance clearly.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def _separable(n: int, classes: int, feat: int, rng: np.random.Generator, p_in: float = 0.9, deg: int = 3):
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1.0, (n, feat)).astype(np.float32)
    x[np.arange(n), y % feat] += 2.5
    src, dst = [], []
    for i in range(n):
        for _ in range(deg):
            same = rng.random() < p_in
            pool = np.flatnonzero((y == y[i]) if same else (y != y[i]))
            j = int(rng.choice(pool))
            if j != i:
                src.append(i)
                dst.append(j)
    return x, y, np.array([src, dst], dtype=np.int64)


# ----------------------------------------------------------------------------- Planetoid
def write_planetoid(root: Path, name: str = "cora", classes: int = 3, feat: int = 12, n_train: int = 30,
                    n_test: int = 60, seed: int = 0, n_extra: int = 0, features: str = "bow") -> Path:
    """PyG's Planetoid reads train = first ``len(y)`` nodes, valid = the next 500, test = ``test.index``;
    ``n_extra`` more nodes (in no split, as most of Cora) sit between valid and test.

    ``features="bow"``: binary bag-of-words rows as the real Planetoid sets have (each class owns a block of
    words, drawn with probability 0.5, every other word with 0.1), so row normalisation means what it means
    there; ``"gaussian"``: the class-shifted Gaussian features of the other fixtures.
    Cora-sized: ``classes=7, feat=1433, n_train=140, n_extra=1068, n_test=1000`` (2708 nodes).
    """
    rng = np.random.default_rng(seed)
    n = n_train + 500 + n_extra + n_test
    x, y, ei = _separable(n, classes, feat, rng)
    if features == "bow":
        block = np.arange(feat) * classes // feat            # the class owning each word
        p = np.where(block[None, :] == y[:, None], 0.5, 0.1)
        x = (rng.random((n, feat)) < p).astype(np.float32)
    elif features != "gaussian":
        raise ValueError(f"features must be bow or gaussian, got {features!r}")
    onehot = np.eye(classes, dtype=np.int64)[y]
    n_all = n - n_test
    raw = Path(root) / {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    objs = {"x": sp.csr_matrix(x[:n_train]), "allx": sp.csr_matrix(x[:n_all]), "tx": sp.csr_matrix(x[n_all:]),
            "y": onehot[:n_train], "ally": onehot[:n_all], "ty": onehot[n_all:]}
    graph: dict[int, list[int]] = {i: [] for i in range(n)}
    for s, d in ei.T:
        graph[int(s)].append(int(d))
    objs["graph"] = graph
    for key, obj in objs.items():
        with open(raw / f"ind.{name}.{key}", "wb") as f:
            pickle.dump(obj, f)
    (raw / f"ind.{name}.test.index").write_text("\n".join(str(i) for i in range(n_all, n)) + "\n")
    return Path(root)


# ----------------------------------------------------------------------------- PPI
def write_ppi(root: Path, graphs=(3, 1, 1), nodes: int = 40, feat: int = 50, labels: int = 121, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    raw = Path(root) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    gid = 1
    for split, count in zip(("train", "valid", "test"), graphs):
        xs, ys, ids, nodes_json, links = [], [], [], [], []
        offset = 0
        for _ in range(count):
            x, cls, ei = _separable(nodes, 4, feat, rng)
            # multi-label targets: label k is on for class k % 4 (plus noise-free structure)
            y = (np.arange(labels)[None, :] % 4 == cls[:, None]).astype(np.float32)
            xs.append(x)
            ys.append(y)
            ids.append(np.full(nodes, gid))
            nodes_json += [{"id": offset + i} for i in range(nodes)]
            links += [{"source": int(s) + offset, "target": int(d) + offset} for s, d in ei.T]
            offset += nodes
            gid += 1
        g = {"directed": False, "multigraph": False, "graph": {}, "nodes": nodes_json, "links": links}
        (raw / f"{split}_graph.json").write_text(json.dumps(g))
        np.save(raw / f"{split}_feats.npy", np.concatenate(xs))
        np.save(raw / f"{split}_labels.npy", np.concatenate(ys))
        np.save(raw / f"{split}_graph_id.npy", np.concatenate(ids))
    return Path(root)


# ----------------------------------------------------------------------------- OGB (DatasetSaver)
def _split(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    perm = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": np.sort(perm[:a]), "valid": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def write_ogb(root: Path, name: str, seed: int = 0, **kw) -> Path:
    """Write a tiny ``name`` (an ogb dataset name) with DatasetSaver; return the ``--root`` to use."""
    import torch
    from ogb.io import DatasetSaver
    rng = np.random.default_rng(seed)
    family = name.split("-")[0]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(root)                     # DatasetSaver writes 'submission_<...>/' under the cwd
    try:
        saver = DatasetSaver(name, is_hetero=False, version=1, root="submission")
        extra_meta: dict[str, str] = {}
        if family == "ogbn":
            graph, labels, split, task = _ogbn_graph(name, rng, extra_meta, **kw)
            saver.save_graph_list([graph])
            saver.save_target_labels(labels)
        elif family == "ogbg":
            graphs, labels, task = _ogbg_graphs(name, rng, **kw)
            saver.save_graph_list(graphs)
            saver.save_target_labels(labels)
            split = _split(len(graphs), rng)
        else:
            graph, split = _ogbl_graph(name, rng, **kw)
            saver.save_graph_list([graph])
            task = ("link prediction", "hits@50", None)
        split_name = {"ogbn-proteins": "species", "ogbn-arxiv": "time", "ogbn-products": "sales_ranking",
                      "ogbg-ppa": "species", "ogbl-collab": "time"}.get(name, "scaffold" if family == "ogbg" else "random")
        saver.save_split(split, split_name)
        mapping = Path("mapping_src")
        mapping.mkdir(exist_ok=True)
        (mapping / "README.md").write_text("tiny test fixture\n")
        saver.copy_mapping_dir(str(mapping))
        saver.save_task_info(*task)
        meta = saver.get_meta_dict()
        meta.update(extra_meta)
        torch.save(meta, saver.meta_dict_path)   # DatasetSaver's file, completed with master-table fields
        return root / saver.submission_dir
    finally:
        os.chdir(cwd)


def _ogbn_graph(name: str, rng: np.random.Generator, extra_meta: dict, n: int = 90, feat: int = 128,
                classes: int = 40):
    if name == "ogbn-proteins":
        tasks = 112
        x, cls, ei = _separable(n, 2, 8, rng, deg=4)
        ei = np.concatenate([ei, ei[::-1]], axis=1)     # undirected, as the release after add_inverse_edge
        # edge features carry the class of the target node so the edge-sum node features separate
        edge_feat = (rng.random((ei.shape[1], 8)) * 0.2).astype(np.float32)
        edge_feat[:, 0] += cls[ei[1]].astype(np.float32)
        species = rng.choice([3702, 4932, 6239, 7227, 7955, 9606, 10090, 511145], size=(n, 1)).astype(np.int64)
        y = np.tile(cls[:, None], (1, tasks)).astype(np.int64)
        y[:, 1::2] = 1 - y[:, 1::2]
        graph = {"num_nodes": n, "edge_index": ei, "edge_feat": edge_feat, "node_feat": None,
                 "node_species": species}
        extra_meta["additional node files"] = "node_species"
        return graph, y, _split(n, rng), ("binary classification", "rocauc", 2)
    feat = 100 if name == "ogbn-products" else feat
    classes = 47 if name == "ogbn-products" else classes
    x, cls, ei = _separable(n, classes, feat, rng, deg=4)
    # use only a few classes so the tiny graph has several nodes per class
    cls = cls % 3
    x = rng.normal(0, 1, (n, feat)).astype(np.float32)
    x[np.arange(n), cls] += 2.5
    graph = {"num_nodes": n, "edge_index": ei, "edge_feat": None, "node_feat": x}
    return graph, cls[:, None].astype(np.int64), _split(n, rng), ("multiclass classification", "acc", classes)


def _ogbg_graphs(name: str, rng: np.random.Generator, count: int = 40):
    from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims
    graphs, labels = [], []
    for g in range(count):
        n = int(rng.integers(4, 9))
        label = g % 2
        src = np.arange(n - 1)
        ei = np.stack([np.concatenate([src, src + 1]), np.concatenate([src + 1, src])]).astype(np.int64)
        if name == "ogbg-ppa":
            e = ei.shape[1]
            edge_feat = (rng.random((e, 7)) * 0.1 + (label if g % 2 else 0) * 0.9).astype(np.float32)
            graphs.append({"num_nodes": n, "edge_index": ei, "edge_feat": edge_feat, "node_feat": None})
            labels.append([g % 3 if False else label])
        else:
            atom = np.stack([rng.integers(0, d, n) for d in get_atom_feature_dims()], 1).astype(np.int64)
            atom[:, 0] = 5 + label                      # the atom type carries the label
            bond = np.stack([rng.integers(0, d, ei.shape[1]) for d in get_bond_feature_dims()], 1).astype(np.int64)
            graphs.append({"num_nodes": n, "edge_index": ei, "edge_feat": bond, "node_feat": atom})
            labels.append([label])
    if name == "ogbg-ppa":
        return graphs, np.array(labels, dtype=np.int64), ("multiclass classification", "acc", 37)
    if name == "ogbg-molpcba":
        # 128 tasks (task t = label, flipped on odd t), ~30% missing (NaN) as in the release
        y = np.tile(np.array(labels, dtype=np.float32), (1, 128))
        y[:, 1::2] = 1 - y[:, 1::2]
        y[rng.random(y.shape) < 0.3] = np.nan
        return graphs, y, ("binary classification", "ap", 2)
    return graphs, np.array(labels, dtype=np.int64), ("binary classification", "rocauc", 2)


def _ogbl_graph(name: str, rng: np.random.Generator, n: int = 60, feat: int = 128):
    x, cls, ei = _separable(n, 3, feat, rng, p_in=1.0, deg=4)
    ei = np.unique(np.sort(ei, axis=0), axis=1)
    perm = rng.permutation(ei.shape[1])
    a, b = int(0.7 * len(perm)), int(0.85 * len(perm))
    tr, va, te = ei[:, perm[:a]], ei[:, perm[a:b]], ei[:, perm[b:]]
    train_graph = np.concatenate([tr, tr[::-1]], axis=1)

    def neg(k):
        s = rng.integers(0, n, k)
        d = rng.integers(0, n, k)
        keep = cls[s] != cls[d]                         # negatives join different classes
        return np.stack([s[keep], d[keep]], 1)
    split = {"train": {"edge": tr.T.copy()}, "valid": {"edge": va.T.copy(), "edge_neg": neg(200)},
             "test": {"edge": te.T.copy(), "edge_neg": neg(200)}}
    graph = {"num_nodes": n, "edge_index": train_graph, "edge_feat": None, "node_feat": x}
    return graph, split


# ----------------------------------------------------------------------------- TU (raw text files)
def write_tu_files(root: Path, name: str, edges: list, indicator: list, graph_labels: list, node_labels: list,
                   attributes: list | None = None, digits: int = 4) -> Path:
    """The TU release's files ``ROOT/NAME/raw/NAME_{A,graph_indicator,graph_labels,node_labels[,
    node_attributes]}.txt`` from their rows: 1-based ``(a, b)`` edge pairs (``", "``-separated), one
    graph id, graph label and node label per line, attribute rows written with ``digits`` decimals."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{c}\n" for c in graph_labels))
    (raw / f"{name}_node_labels.txt").write_text("".join(f"{c}\n" for c in node_labels))
    if attributes is not None:
        (raw / f"{name}_node_attributes.txt").write_text(
            "".join(", ".join(f"{v:.{digits}f}" for v in row) + "\n" for row in attributes))
    return Path(root)


def write_tu(root: Path, name: str = "ENZYMES", graphs: int = 60, classes: int = 3, node_labels: int = 4,
             attributes: int = 0, seed: int = 0) -> Path:
    """``ROOT/NAME/raw/NAME_{A,graph_indicator,graph_labels,node_labels[,node_attributes]}.txt`` as in the TU
    release (1-based node ids, every undirected edge listed both ways, ``", "``-separated pairs). Graphs of
    class ``c`` have mostly node label ``c % node_labels`` (and denser chords for odd classes)."""
    rng = np.random.default_rng(seed)
    edges, indicator, glabels, nlabels, attrs = [], [], [], [], []
    offset = 0
    for g in range(graphs):
        c = g % classes
        n = int(rng.integers(5, 11))
        pairs = {(i, (i + 1) % n) for i in range(n)}                     # a ring
        for _ in range(n // 2 if c % 2 else 1):
            a, b = rng.choice(n, 2, replace=False)
            pairs.add((int(a), int(b)))
        for a, b in sorted(pairs):
            edges += [(offset + a + 1, offset + b + 1), (offset + b + 1, offset + a + 1)]
        indicator += [g + 1] * n
        glabels.append(c + 1)                                             # labels need not start at 0
        nlabels += [int(c % node_labels) if rng.random() < 0.8 else int(rng.integers(0, node_labels)) for _ in range(n)]
        attrs += [rng.normal(c, 1.0, attributes) for _ in range(n)]
        offset += n
    return write_tu_files(root, name, edges, indicator, glabels, nlabels, attrs if attributes else None, digits=4)


# ----------------------------------------------------------------------------- MoleculeNet-style CSV
# Real molecules: ring systems of several scaffolds (so a scaffold split has something to split) and
# acyclic ones (the empty scaffold).
SMILES = [
    "c1ccccc1", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "CCc1ccccc1", "Clc1ccccc1", "CC(=O)Nc1ccccc1",
    "OC(=O)c1ccccc1", "c1ccncc1", "Cc1ccncc1", "Nc1ccncc1", "Oc1ccncc1", "C1CCCCC1", "CC1CCCCC1",
    "NC1CCCCC1", "OC1CCCCC1", "c1ccc2ccccc2c1", "Cc1ccc2ccccc2c1", "Nc1ccc2ccccc2c1", "Oc1ccc2ccccc2c1",
    "C1CCNCC1", "CC1CCNCC1", "OC1CCNCC1", "c1ccoc1", "Cc1ccoc1", "Nc1ccoc1", "c1ccsc1", "Cc1ccsc1",
    "Nc1ccsc1", "c1cc[nH]c1", "Cc1cc[nH]c1", "Oc1cc[nH]c1", "CCO", "CCN", "CCCO", "CCCN", "CC(C)O", "CC(C)N",
    "CCOC(=O)C", "NCC(=O)O", "OCC(O)CO", "CCCCN", "c1ccc(cc1)-c1ccccc1", "Nc1ccc(cc1)-c1ccccc1",
    "Oc1ccc(cc1)-c1ccccc1", "C1CCC(CC1)c1ccccc1", "NC1CCC(CC1)c1ccccc1", "OC1CCC(CC1)c1ccccc1",
]


def write_molecule_csv(path: Path, smiles: list[str] | None = None, extra_rows: list[tuple[str, str, str]] = ()) -> Path:
    """A MoleculeNet-style CSV: ``smiles,HIV_active,solubility`` (HIV_active = 1 iff the molecule has a
    nitrogen, a binary target a GNN can learn; solubility = -0.5 x the number of carbon atoms, a regression
    target; one missing label). ``extra_rows`` are appended verbatim (e.g. an invalid SMILES)."""
    smiles = list(SMILES if smiles is None else smiles)
    lines = ["smiles,HIV_active,solubility"]
    for i, s in enumerate(smiles):
        active = int("N" in s or "n" in s)
        carbons = sum(ch in "Cc" for ch in s.replace("Cl", ""))
        lines.append(f"{s},{'' if i == 5 else active},{-0.5 * carbons}")
    lines += [",".join(r) for r in extra_rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
