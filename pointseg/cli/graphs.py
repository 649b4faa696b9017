"""``pointseg graphs {presets,train,evaluate}``: GCN / DeepGCNs / DeeperGCN on PPI, Planetoid, OGB, TU and CSV."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="graphs_command", metavar="ACTION")
    sub.add_parser("presets", help="list graph presets: NAME PARAMS ('-' = depends on the dataset)")
    t = sub.add_parser("train", help="train a preset on a dataset already on disk")
    t.add_argument("dataset", help="Cora | CiteSeer | PubMed | PPI | any ogbn-/ogbg-/ogbl- dataset | a TU dataset "
                                   "(MUTAG, ENZYMES, PROTEINS, ...) | path/to/molecules.csv")
    t.add_argument("--preset", default=None,
                   help="a name from `pointseg graphs presets` (default: the preset made for the dataset, else "
                        "gcn-2 for Planetoid, resmrgcn-28-ppi for PPI, gin-tu for TU datasets, deepergcn-mol for "
                        "CSV files, deepergcn otherwise; printed at the start)")
    t.add_argument("--smiles-column", default=None, help="CSV datasets: the SMILES column (default: smiles)")
    t.add_argument("--target", action="append", default=None,
                   help="CSV datasets: a target column (repeatable; 0/1 targets -> ROC-AUC, others -> RMSE)")
    t.add_argument("--skip-invalid-smiles", action="store_true",
                   help="CSV datasets: skip (and report) rows whose SMILES rdkit cannot parse, instead of refusing")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on CPU for Planetoid, TU and CSV datasets, whose small graphs "
                        "train faster on one thread; torch's default otherwise; see docs/graphs.md)")
    t.add_argument("--root", default="data", help="folder holding the dataset (default: data)")
    t.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    t.add_argument("--runs", type=int, default=None,
                   help="training runs run0..run<R-1> (default 1; TU datasets: one per fold, default all folds)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", default=None, help="output folder (checkpoints run*/best.pt, tb/ logs)")
    t.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model option (repeatable; YAML values: true, null, 0.5)")
    t.add_argument("--train-set", action="append", metavar="KEY=VALUE",
                   help="override a training option (repeatable): lr, epochs, optimizer, weight_decay, "
                        "warmup_epochs, lr_step, lr_gamma (x gamma every lr_step epochs), patience (early "
                        "stopping on validation; 0 = off), batch_size, parts, eval_parts, eval_repeats, "
                        "predictor_layers, use_labels, label_rate, label_iters, loss, weight_decay_scope "
                        "(all | first), normalize_features (Planetoid), use_node_attr (default true), folds (TU)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("evaluate", help="evaluate a checkpoint on its dataset")
    e.add_argument("checkpoint")
    e.add_argument("--root", default=None, help="dataset folder (default: the one used for training)")
    e.add_argument("--device", default="cpu")
    p.set_defaults(_graphs_parser=p)


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "graphs_command", None)
    if cmd is None:
        args._graphs_parser.print_help()
        return 0
    if cmd == "presets":
        from pointseg.graphs.presets import GRAPH_PRESETS, preset_parameter_count
        for name in GRAPH_PRESETS:
            n = preset_parameter_count(name)
            print(f"{name} {n if n is not None else '-'}")
        return 0
    if cmd == "train":
        from pointseg.config import apply_overrides
        from pointseg.graphs.train import run_training
        # one value grammar with `pointseg train`: YAML values (true / null / 1e-3 / [1, 2])
        train_overrides = apply_overrides({}, args.train_set or [])
        csv = args.dataset.lower().endswith(".csv")
        if not csv and (args.smiles_column or args.target or args.skip_invalid_smiles):
            raise ValueError("--smiles-column / --target / --skip-invalid-smiles apply to .csv datasets only")
        if csv:
            train_overrides.update(smiles_column=args.smiles_column or "smiles", target=",".join(args.target or []),
                                   skip_invalid_smiles=args.skip_invalid_smiles)
        run_training(args.dataset, args.preset, args.root, epochs=args.epochs, runs=args.runs, device=args.device,
                     out=args.out, overrides=apply_overrides({}, args.set or []), lr=args.lr, seed=args.seed,
                     overwrite=args.overwrite, progress=not args.no_progress,
                     train_overrides=train_overrides, threads=args.threads)
        return 0
    from pointseg.graphs.train import evaluate_checkpoint
    evaluate_checkpoint(args.checkpoint, args.root, args.device)
    return 0
