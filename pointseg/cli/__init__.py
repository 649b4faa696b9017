"""The ``pointseg`` command. Each subcommand lives in its own module under ``pointseg.cli``
with ``add_parser(subparsers)`` and ``run(args) -> int``; this file only lists them.

Errors a user can fix (bad file, bad argument) are raised as ``ValueError`` /
``FileNotFoundError`` / ``FileExistsError`` and printed as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Sequence

# (module, help) in the order ``pointseg --help`` lists them.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("segment", "label every point of a scan (default: the bundled sample room)"),
    ("train", "train a segmentation model from a YAML config"),
    ("evaluate", "evaluate a checkpoint on every original point of the test rooms"),
    ("models", "list model presets with their parameter counts, or show one"),
    ("import", "convert a checkpoint of another project (dgcnn-pytorch, deepgcns) to a pointseg checkpoint"),
    ("view", "look at a scan or segmentation: Open3D window, or --screenshot PNG (headless)"),
    ("synth", "write synthetic rooms in the raw S3DIS layout"),
    ("prepare-s3dis", "convert the raw S3DIS release into one array file per room (with repairs)"),
    ("make-blocks", "cut prepared rooms into 1 m blocks in the S3DIS HDF5 block layout"),
    ("graphs", "DeepGCNs / DeeperGCN on PPI, Planetoid and OGB graphs: presets, train, evaluate"),
]

# subcommands whose module name differs from the command (``import`` is a Python keyword)
MODULES: dict[str, str] = {"import": "import_"}


def build_parser() -> argparse.ArgumentParser:
    from pointseg import __version__
    parser = argparse.ArgumentParser(
        prog="pointseg",
        description="Deep GCNs for 3D room segmentation (DeepGCNs / DeeperGCN / RevGNN).")
    parser.add_argument("--version", action="version", version=f"pointseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in SUBCOMMANDS:
        mod = importlib.import_module(f"pointseg.cli.{MODULES.get(name, name.replace('-', '_'))}")
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _engine_output(verbose: bool):
    """``--verbose``: let the rendering engine's start-up lines through for this command only
    (they are kept off the terminal otherwise, see viewer.quiet)."""
    if not verbose:
        return contextlib.nullcontext()
    from pointseg.viewer.quiet import engine_output_shown
    return engine_output_shown()


@contextlib.contextmanager
def _own_warnings(command: str):
    """pointseg's own renames and deprecations (FutureWarning) as one line of its own, not Python's
    file:line report."""
    import warnings
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning):
            print(f"pointseg {command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `key=value` overrides may also follow options (`train CFG --device cuda amp=bf16`)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "_run"):
        parser.print_help()
        return 0
    try:
        with _engine_output(getattr(args, "verbose", False)), _own_warnings(args.command):
            return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        print(f"pointseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # e.g. `pointseg models | head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:             # read-only or full file system, permissions: the OS names the path
        print(f"pointseg {args.command}: error: {e}", file=sys.stderr)
        return 2
