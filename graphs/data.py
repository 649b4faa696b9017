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


def known_datasets() -> list[str]:
    names = list(PLANETOID) + ["ppi"]
    for kind in OGB_KINDS:
        names += list(ogb_master(kind))
    return names


def dataset_family(name: str) -> str:
    """``planetoid`` | ``ppi`` | ``ogbn`` | ``ogbg`` | ``ogbl``; unknown names get close suggestions."""
    key = name.lower()
    if key in PLANETOID:
        return "planetoid"
    if key == "ppi":
        return "ppi"
    prefix = name.split("-")[0]
    if prefix in OGB_KINDS and name in ogb_master(prefix):
        return prefix
    lowered = {n.lower(): n for n in known_datasets()}
    close = [lowered[c] for c in difflib.get_close_matches(key, lowered, n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint} (known: Cora, CiteSeer, PubMed, PPI and every "
                     "ogbn-/ogbg-/ogbl- dataset of ogb, e.g. ogbn-arxiv, ogbg-molhiv, ogbl-collab)")


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
