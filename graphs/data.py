"""Dataset lookup and loading through PyG's and ogb's own loaders, never downloading.

Each loader is handed a ``--root`` that must already hold the dataset in its public on-disk
layout; when the files are missing we raise a ``FileNotFoundError`` that says which files to put
where, *before* the library gets a chance to start a download (or, for ogb, to ask on stdin).

ogb 1.3.6 loads its processed files with ``torch.load`` (``weights_only=True`` since torch 2.6), so
PyG's data classes (and the numpy types of ``split_dict.pt``) are allow-listed with
``torch.serialization.add_safe_globals``; ``weights_only`` is never switched off.
"""
from __future__ import annotations

import difflib
import functools
import os.path as osp
from pathlib import Path
from typing import Any

import torch

PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
OGB_KINDS = {"ogbn": "nodeproppred", "ogbg": "graphproppred", "ogbl": "linkproppred"}


@functools.lru_cache(maxsize=None)
def ogb_master(kind: str) -> dict[str, dict[str, str]]:
    """ogb's own table of datasets of one kind (``ogbn`` / ``ogbg`` / ``ogbl``): name -> meta info."""
    import ogb
    import pandas as pd
    path = osp.join(osp.dirname(ogb.__file__), OGB_KINDS[kind], "master.csv")
    master = pd.read_csv(path, index_col=0, keep_default_na=False)
    return {name: {k: str(v) for k, v in master[name].items()} for name in master.columns}


# TU datasets (https://chrsmrrs.github.io/datasets/) known by name; any other NAME works when
# ROOT/NAME/raw/NAME_A.txt exists.
TU_KNOWN = ("MUTAG", "ENZYMES", "PROTEINS", "PROTEINS_full", "DD", "NCI1", "NCI109", "PTC_MR", "PTC_FM", "BZR",
            "COX2", "DHFR", "AIDS", "Mutagenicity", "FRANKENSTEIN", "IMDB-BINARY", "IMDB-MULTI", "COLLAB",
            "REDDIT-BINARY", "REDDIT-MULTI-5K", "REDDIT-MULTI-12K")
TU_REQUIRED = ("A", "graph_indicator", "graph_labels")


def known_datasets() -> list[str]:
    names = list(PLANETOID) + ["ppi"] + list(TU_KNOWN)
    for kind in OGB_KINDS:
        names += list(ogb_master(kind))
    return names


def dataset_family(name: str, root: str | Path | None = None) -> str:
    """``planetoid`` | ``ppi`` | ``ogbn`` | ``ogbg`` | ``ogbl`` | ``tu`` | ``csv`` (a ``.csv`` path);
    unknown names get close suggestions."""
    key = name.lower()
    if key.endswith(".csv"):
        return "csv"
    if key in PLANETOID:
        return "planetoid"
    if key == "ppi":
        return "ppi"
    prefix = name.split("-")[0]
    if prefix in OGB_KINDS and name in ogb_master(prefix):
        return prefix
    if name in TU_KNOWN or (root is not None and (Path(root) / name / "raw" / f"{name}_A.txt").exists()):
        return "tu"
    tu_case = {n.lower(): n for n in TU_KNOWN}
    if key in tu_case:
        raise ValueError(f"unknown dataset {name!r}; TU names are case-sensitive: did you mean {tu_case[key]}?")
    lowered = {n.lower(): n for n in known_datasets()}
    close = [lowered[c] for c in difflib.get_close_matches(key, lowered, n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint} (known: Cora, CiteSeer, PubMed, PPI, every "
                     "ogbn-/ogbg-/ogbl- dataset of ogb, e.g. ogbn-arxiv, ogbg-molhiv, ogbl-collab, TU datasets "
                     "such as MUTAG, ENZYMES, PROTEINS, and MoleculeNet-style .csv files)")


@functools.lru_cache(maxsize=None)
def allow_pyg_globals() -> None:
    """Allow-list the classes PyG / ogb processed files contain, for ``torch.load(weights_only=True)``."""
    import numpy as np
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage
    safe: list[Any] = [DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]
    # ogb's DatasetSaver stores split_dict.pt with numpy arrays.
    core = getattr(np, "_core", None) or np.core
    safe += [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    safe += [type(np.dtype(t)) for t in ("int64", "int32", "float32", "float64", "bool")]
    torch.serialization.add_safe_globals(safe)


def _missing(base: Path, files: list[str]) -> list[str]:
    return [f for f in files if not (base / f).exists()]


def _need(root: Path, what: str, base: Path, files: list[str], source: str) -> None:
    missing = _missing(base, files)
    if missing:
        raise FileNotFoundError(
            f"{what} not found under --root {root}: missing {', '.join(str(base / f) for f in missing)}. "
            f"No download is attempted; {source}")


# ----------------------------------------------------------------------------- PyG datasets
def load_planetoid(name: str, root: str | Path):
    from torch_geometric.datasets import Planetoid
    root = Path(root)
    pyg_name = PLANETOID[name.lower()]
    processed = root / pyg_name / "processed" / "data.pt"
    if not processed.exists():
        raw = [f"ind.{name.lower()}.{n}" for n in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")]
        _need(root, f"Planetoid {pyg_name}", root / pyg_name / "raw", raw,
              "copy the 8 raw files of https://github.com/kimiyoung/planetoid (data/) into that folder.")
    allow_pyg_globals()
    return Planetoid(str(root), pyg_name, split="public")


def load_ppi(root: str | Path) -> dict[str, Any]:
    from torch_geometric.datasets import PPI
    root = Path(root)
    if _missing(root / "processed", ["train.pt", "val.pt", "test.pt"]):
        raw = [f"{s}_{f}" for s in ("train", "valid", "test")
               for f in ("feats.npy", "graph_id.npy", "graph.json", "labels.npy")]
        _need(root, "PPI", root / "raw", raw,
              "unzip https://data.dgl.ai/dataset/ppi.zip into that folder.")
    allow_pyg_globals()
    return {split: PPI(str(root), split=split) for split in ("train", "val", "test")}


# ----------------------------------------------------------------------------- ogb datasets
def _ogb_raw_files(meta: dict[str, str], family: str) -> list[str]:
    if meta.get("binary") == "True":
        files = ["data.npz"]
    else:
        files = ["edge.csv.gz", "num-node-list.csv.gz", "num-edge-list.csv.gz"]
        if meta.get("has_node_attr") == "True":
            files.append("node-feat.csv.gz")
        if meta.get("has_edge_attr") == "True":
            files.append("edge-feat.csv.gz")
    if family == "ogbn":
        files.append("node-label.npz" if meta.get("binary") == "True" else "node-label.csv.gz")
    elif family == "ogbg":
        files.append("graph-label.npz" if meta.get("binary") == "True" else "graph-label.csv.gz")
    return files


def ogb_location(name: str, root: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """Where the dataset lives and, for a DatasetSaver submission, its ``meta_dict``.

    Two layouts are accepted: the official release unzipped as ``ROOT/<name with _>/`` (e.g.
    ``ROOT/ogbn_arxiv/raw/edge.csv.gz``), or the output of ``ogb.io.DatasetSaver`` — ``ROOT`` holds
    ``meta_dict.pt`` and the dataset folder next to it.
    """
    root = Path(root)
    family = name.split("-")[0]
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory (it should contain "
                                f"{'_'.join(name.split('-'))}/ for {name})")
    if (root / "meta_dict.pt").exists():
        allow_pyg_globals()
        meta = torch.load(root / "meta_dict.pt", weights_only=True)
        if not isinstance(meta, dict) or "dir_path" not in meta:
            raise ValueError(f"{root / 'meta_dict.pt'} is not an ogb DatasetSaver meta_dict")
        ds_dir = root / Path(str(meta["dir_path"])).name
        meta = {**meta, "dir_path": str(ds_dir)}
    else:
        meta = None
        ds_dir = root / "_".join(name.split("-"))
        if not ds_dir.exists() and (root / ("_".join(name.split("-")) + "_pyg")).exists():
            ds_dir = root / ("_".join(name.split("-")) + "_pyg")
    info = meta if meta is not None else ogb_master(family)[name]
    download = ogb_master(family).get(name, {}).get("download_name", "?")
    url = ogb_master(family).get(name, {}).get("url", "the OGB website")
    how = (f"download {url}, unzip it into {root} and rename the folder {download}/ to {ds_dir.name}/ "
           "(or point --root at an ogb.io.DatasetSaver output holding meta_dict.pt).")
    version = info.get("version", 1)
    if not ds_dir.exists():
        raise FileNotFoundError(f"{name} not found under --root {root}: expected the folder {ds_dir}. "
                                f"No download is attempted; {how}")
    # Without this file ogb 1.3.6 asks on stdin whether to delete the folder.
    _need(root, name, ds_dir, [f"RELEASE_v{version}.txt"], how)
    if not (ds_dir / "processed" / "geometric_data_processed.pt").exists():
        _need(root, name, ds_dir / "raw", _ogb_raw_files(info, family), how)
    split_dir = ds_dir / "split" / str(info.get("split", ""))
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{name}: split folder {split_dir} is missing; {how}")
    return ds_dir, meta


def load_ogb(name: str, root: str | Path, transform=None):
    family = name.split("-")[0]
    _, meta = ogb_location(name, root)
    allow_pyg_globals()
    if family == "ogbn":
        from ogb.nodeproppred import PygNodePropPredDataset as Cls
    elif family == "ogbg":
        from ogb.graphproppred import PygGraphPropPredDataset as Cls
    else:
        from ogb.linkproppred import PygLinkPropPredDataset as Cls
    kw: dict[str, Any] = {"meta_dict": meta} if meta is not None else {}
    if transform is not None:
        kw["transform"] = transform
    return Cls(name=name, root=str(root), **kw)


# ----------------------------------------------------------------------------- TU datasets
def load_tu(name: str, root: str | Path, use_node_attr: bool = False):
    """PyG's ``TUDataset`` on ``ROOT/NAME/raw/NAME_*.txt`` (the unzipped TU release); never downloads."""
    from torch_geometric.datasets import TUDataset
    root = Path(root)
    if not (root / name / "processed").is_dir():
        _need(root, f"TU dataset {name}", root / name / "raw", [f"{name}_{f}.txt" for f in TU_REQUIRED],
              f"unzip https://www.chrsmrrs.com/graphkerneldatasets/{name}.zip into {root} "
              f"(it holds {name}/{name}_A.txt ...) and move those files into {root / name / 'raw'}.")
    allow_pyg_globals()
    return TUDataset(str(root), name, use_node_attr=use_node_attr)


# ----------------------------------------------------------------------------- MoleculeNet-style CSV
def scaffold_split(smiles: list[str], frac_train: float = 0.8, frac_valid: float = 0.1) -> dict[str, list[int]]:
    """Bemis-Murcko scaffold split (rdkit ``MurckoScaffold``, chirality included): molecules grouped by
    scaffold, groups taken largest first (ties: earliest first molecule first) into train until it would
    exceed ``frac_train`` of the molecules, then into valid up to ``frac_train + frac_valid``, the rest into
    test — the MoleculeNet / OGB convention, so no scaffold is shared between splits."""
    from rdkit.Chem.Scaffolds import MurckoScaffold
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=True), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), -g[0]), reverse=True)
    n = len(smiles)
    out: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for g in ordered:
        if len(out["train"]) + len(g) <= frac_train * n:
            out["train"] += g
        elif len(out["train"]) + len(out["valid"]) + len(g) <= (frac_train + frac_valid) * n:
            out["valid"] += g
        else:
            out["test"] += g
    return {k: sorted(v) for k, v in out.items()}


def load_molecule_csv(path: str | Path, smiles_column: str, targets: list[str], skip_invalid: bool = False):
    """Graphs (ogb ``smiles2graph``: 9 integer atom / 3 bond features) and ``y (1, T)`` float targets (NaN =
    missing) of a CSV with a SMILES column. Returns ``(graphs, smiles, skipped_lines)``. An unparsable SMILES
    is refused naming its line, or skipped (and reported) with ``skip_invalid``."""
    import pandas as pd
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise ValueError("MoleculeNet CSV datasets need rdkit: pip install 'pointseg[chem]' (or pip install rdkit)") from None
    from ogb.utils import smiles2graph
    from torch_geometric.data import Data
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV dataset {path} does not exist")
    df = pd.read_csv(path)
    if not targets:
        raise ValueError(f"{path}: name the target column(s) with --target (columns: {', '.join(map(str, df.columns))})")
    missing = [c for c in [smiles_column, *targets] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (columns: {', '.join(map(str, df.columns))}); "
                         "use --smiles-column / --target")
    try:
        y_all = df[targets].apply(pd.to_numeric, errors="raise").to_numpy(dtype="float32")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: target column(s) {targets} must be numeric (empty = missing): {e}") from None
    RDLogger.DisableLog("rdApp.*")
    graphs, smiles, skipped = [], [], []
    for row, (s, y) in enumerate(zip(df[smiles_column], y_all)):
        line = row + 2                                  # 1-based, after the header line
        mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
        if mol is None or mol.GetNumAtoms() == 0:
            if not skip_invalid:
                raise ValueError(f"{path} line {line}: invalid SMILES {s!r} (pass --skip-invalid-smiles to skip such rows)")
            skipped.append(line)
            continue
        g = smiles2graph(s)
        graphs.append(Data(x=torch.tensor(g["node_feat"], dtype=torch.long),
                           edge_index=torch.tensor(g["edge_index"], dtype=torch.long),
                           edge_attr=torch.tensor(g["edge_feat"], dtype=torch.long), y=torch.tensor(y).view(1, -1),
                           num_nodes=int(g["num_nodes"])))
        smiles.append(s)
    if len(graphs) < 3:
        raise ValueError(f"{path}: {len(graphs)} valid molecule(s); a train / valid / test split needs at least 3")
    return graphs, smiles, skipped
