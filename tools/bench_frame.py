"""Do the frame decisions help the model's labels? Accuracy against the ground truth, per frame
policy, on real scans and on partial synthetic rooms.

    PYTHONPATH=. python tools/bench_frame.py                 # both parts
    PYTHONPATH=. python tools/bench_frame.py --part real     # the Kinect scans of shared/real_scans

Part ``real``: the four mOSD Kinect scans (camera frame, organised PCD, per-point labels). S3DIS has
no "object on a table" task, so the score is the two-class accuracy that the scan's labels define:
a point labelled table (1-9) is right when the model calls it one of the S3DIS supporting surfaces
(floor, table), an object point (>= 20) when it calls it anything else. Policies: the file's own
axes (``--up +z --units m --walls off``), the default (``auto``), the default without the wall turn
(``--walls off``), and the default with the quarter turn (``--walls canonical``).

Part ``synthetic``: partial rooms (:func:`pointseg.data.synth.partial_room`) upright, turned 30
degrees about the vertical, and in a camera frame in millimetres, segmented with the default model;
OA against their labels for the default policy, ``--walls off`` and ``canonical``, beside the
true frame (``--up +z --units m --walls off`` on the upright room) as the reference.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL = ROOT.parent / "shared" / "real_scans"
POLICIES = {"file axes": dict(up="+z", units="m", walls="off"), "auto (default)": dict(),
            "auto, walls off": dict(walls="off"), "auto, canonical": dict(walls="canonical")}


def _segment(model, scan, sliding, **frame):
    from pointseg.segmentation.segment import segment_scan
    return segment_scan(model, scan, sliding, progress=False, **frame)


def real_part(model, sliding) -> None:
    from pointseg.classes import S3DIS_CLASSES
    from pointseg.io.scans import read_scan
    support = [S3DIS_CLASSES.index("floor"), S3DIS_CLASSES.index("table")]
    print("\nreal: mOSD Kinect scans, support-vs-object accuracy (%)")
    print(f"{'scan':<20}" + "".join(f"{p:>18}" for p in POLICIES))
    for path in sorted(REAL.glob("mosd_learn*.pcd")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan = read_scan(path)
        gt = scan.label.copy()
        scan.label = None
        valid = gt > 0
        row = []
        for frame in POLICIES.values():
            pred = _segment(model, scan, sliding, **frame).labels
            said_support = np.isin(pred, support)
            truth_support = gt < 20
            row.append(100 * np.mean(said_support[valid] == truth_support[valid]))
        print(f"{path.name:<20}" + "".join(f"{v:>18.1f}" for v in row))


def synthetic_part(model, sliding, seeds: int) -> None:
    from pointseg.data.synth import partial_room
    from pointseg.segmentation.frame import rotation_z
    from pointseg.io.scans import Scan
    print("\nsynthetic partial rooms, OA (%) against their labels; reference: the upright room in its true frame")
    print(f"{'room':<28}{'reference':>10}" + "".join(f"{p:>18}" for p in POLICIES if p != "file axes"))
    views = {"upright": lambda p: p, "turned 30 deg": lambda p: p @ rotation_z(np.radians(30)).T,
             "camera mm": lambda p: np.stack([p[:, 0], -p[:, 2], p[:, 1]], 1) * 1000.0}
    for seed in range(seeds):
        for cut in ("no-ceiling", "no-floor-ceiling", "half-bare"):
            xyz, rgb, label = partial_room(np.random.default_rng([seed, 11]), cut, 60_000)
            ref = _segment(model, Scan(xyz=xyz, rgb=rgb), sliding, **POLICIES["file axes"]).labels
            ref_oa = 100 * np.mean(ref == label)
            for view, f in views.items():
                scan = Scan(xyz=f(xyz).astype(np.float32), rgb=rgb)
                oas = [100 * np.mean(_segment(model, scan, sliding, **frame).labels == label)
                       for p, frame in POLICIES.items() if p != "file axes"]
                print(f"{f'{seed} {cut} {view}':<28}{ref_oa:>10.1f}" + "".join(f"{v:>18.1f}" for v in oas))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("real", "synthetic", "both"), default="both")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="default: segment's default (real S3DIS DGCNN)")
    args = ap.parse_args()
    import torch
    from pointseg.segmentation.inference import SlidingConfig
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT, load_model
    torch.manual_seed(0)
    model = load_model(args.checkpoint or DEFAULT_CHECKPOINT, "cpu")
    sliding = SlidingConfig()
    if args.part in ("real", "both"):
        real_part(model, sliding)
    if args.part in ("synthetic", "both"):
        synthetic_part(model, sliding, args.seeds)


if __name__ == "__main__":
    main()
