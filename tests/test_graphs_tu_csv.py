"""TU datasets (raw text files, PyG's TUDataset, k-fold cross-validation) and MoleculeNet-style CSV files
(SMILES through ogb's smiles2graph, scaffold split, ROC-AUC / RMSE) train and evaluate from the CLI."""
import importlib.util
import re

import numpy as np
import pytest
import torch

from graph_fixtures import SMILES, write_molecule_csv, write_tu
from pointseg.graphs.data import dataset_family
from pointseg.graphs.tasks import make_task
from pointseg.cli import main

FINAL = re.compile(r"^test (\S+) (\S+) ± (\S+) \| valid", re.M)


@pytest.fixture(scope="module")
def tu(tmp_path_factory):
    return write_tu(tmp_path_factory.mktemp("tu"))


def test_tu_raw_files_load_through_tudataset_with_one_hot_node_labels(tu):
    task = make_task("ENZYMES", str(tu), {}, torch.device("cpu"))
    assert len(task.graphs) == 60 and task.num_out == 3
    assert task.graphs[0].x.shape[1] == 4 and task.labels.min() == 0          # labels 1..3 -> 0..2
    assert task.num_folds() == 10
    tests = np.concatenate([task.fold_splits[f][1] for f in range(10)])
    assert sorted(tests.tolist()) == list(range(60))                          # every graph tested once
    task.set_fold(3)
    s = task.split
    assert not set(s["train"]) & set(s["valid"]) and not (set(s["train"]) | set(s["valid"])) & set(s["test"])
    assert len(s["train"]) + len(s["valid"]) + len(s["test"]) == 60


def test_tu_cross_validation_from_cli_reports_mean_and_std_over_folds(tu, tmp_path, capsys):
    assert main(["graphs", "train", "ENZYMES", "--root", str(tu), "--out", str(tmp_path / "e"), "--epochs", "15",
                 "--runs", "3", "--set", "layers=2", "--set", "channels=16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "preset gin-tu (default for ENZYMES, family tu" in out
    assert "10-fold stratified cross-validation" in out
    assert re.findall(r"^run(\d) \(fold (\d) of 10\)", out, re.M) == [("0", "0"), ("1", "1"), ("2", "2")]
    m = FINAL.search(out)
    assert m.group(1) == "acc" and float(m.group(2)) > 0.5                   # 3 classes: chance is 1/3
    assert "3 of 10 folds" in out
    assert main(["graphs", "evaluate", str(tmp_path / "e" / "run2" / "best.pt")]) == 0
    assert "test acc" in capsys.readouterr().out
    assert main(["graphs", "train", "ENZYMES", "--root", str(tu), "--out", str(tmp_path / "f"), "--runs", "11",
                 "--no-progress"]) == 2


def test_tu_missing_files_and_wrong_case_are_one_line_errors(tmp_path, capsys):
    assert main(["graphs", "train", "MUTAG", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "MUTAG_A.txt" in err and "No download" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="case-sensitive: did you mean ENZYMES"):
        dataset_family("enzymes")


def test_unknown_tu_name_is_accepted_when_its_raw_files_exist(tmp_path):
    root = write_tu(tmp_path, name="MYGRAPHS", graphs=12)
    assert dataset_family("MYGRAPHS", root) == "tu"


# ----------------------------------------------------------------------------- CSV
needs_rdkit = pytest.mark.skipif(importlib.util.find_spec("rdkit") is None,
                                 reason="MoleculeNet CSV datasets need rdkit (the `chem` / `test` extra)")


@needs_rdkit
def test_scaffold_split_keeps_each_scaffold_in_one_split():
    from rdkit.Chem.Scaffolds import MurckoScaffold
    from pointseg.graphs.data import scaffold_split
    split = scaffold_split(SMILES)
    assert sorted(sum(split.values(), [])) == list(range(len(SMILES)))
    scaf = {k: {MurckoScaffold.MurckoScaffoldSmiles(smiles=SMILES[i], includeChirality=True) for i in v}
            for k, v in split.items()}
    assert not scaf["train"] & scaf["valid"] and not scaf["train"] & scaf["test"] and not scaf["valid"] & scaf["test"]
    assert len(split["train"]) <= 0.8 * len(SMILES) and len(split["train"]) >= 0.6 * len(SMILES)
    assert "" in scaf["train"]                                 # the largest group (acyclic molecules) first


@needs_rdkit
def test_csv_classification_from_cli_with_rocauc(tmp_path, capsys):
    csv = write_molecule_csv(tmp_path / "HIV.csv")
    assert main(["graphs", "train", str(csv), "--smiles-column", "smiles", "--target", "HIV_active", "--out",
                 str(tmp_path / "h"), "--epochs", "20", "--set", "layers=2", "--set", "channels=32",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "48 molecules" in out and "binary, rocauc" in out and "scaffold split" in out
    m = FINAL.search(out)
    assert m.group(1) == "rocauc" and 0.0 <= float(m.group(2)) <= 1.0
    ck = torch.load(tmp_path / "h" / "run0" / "best.pt", weights_only=True)
    assert ck["model_config"]["node_encoder"] == "atom" and ck["model_config"]["pool"] == "mean"
    assert main(["graphs", "evaluate", str(tmp_path / "h" / "run0" / "best.pt")]) == 0
    assert "test rocauc" in capsys.readouterr().out


@needs_rdkit
def test_csv_regression_target_uses_rmse_and_learns(tmp_path, capsys):
    csv = write_molecule_csv(tmp_path / "esol.csv")
    assert main(["graphs", "train", str(csv), "--target", "solubility", "--out", str(tmp_path / "s"),
                 "--epochs", "30", "--set", "layers=2", "--set", "channels=32", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "regression, rmse" in out
    losses = re.search(r"loss (\S+) -> (\S+)", out)
    assert float(losses.group(2)) < float(losses.group(1))
    assert FINAL.search(out).group(1) == "rmse"


@needs_rdkit
def test_csv_bad_input_is_one_line_naming_the_line_or_column(tmp_path, capsys):
    bad = write_molecule_csv(tmp_path / "bad.csv", extra_rows=[("not_a_smiles", "1", "0.0")])
    assert main(["graphs", "train", str(bad), "--target", "HIV_active", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"line {len(SMILES) + 2}: invalid SMILES 'not_a_smiles'" in err and len(err.strip().splitlines()) == 1
    assert main(["graphs", "train", str(bad), "--target", "HIV", "--no-progress"]) == 2
    assert "no column(s) ['HIV']" in capsys.readouterr().err
    assert main(["graphs", "train", str(bad), "--no-progress"]) == 2
    assert "--target" in capsys.readouterr().err
    task = make_task(str(bad), ".", {"target": "HIV_active", "skip_invalid_smiles": True}, torch.device("cpu"))
    assert task.skipped == [len(SMILES) + 2] and len(task.graphs) == len(SMILES)
    assert main(["graphs", "train", "Cora", "--target", "x", "--no-progress"]) == 2
