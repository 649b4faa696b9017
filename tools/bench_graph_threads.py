"""Time one full-batch training epoch (+ evaluation) on a Cora-sized Planetoid graph with 1 and 2 torch threads.

    PYTHONPATH=.:tests python tools/bench_graph_threads.py [--preset gcn-2 resgcn-7-graph] [--threads 1 2] [--epochs 20]

The graph is the Cora-sized fixture of ``tests/graph_fixtures.write_planetoid`` (2708 nodes, 1433 binary
features, 7 classes, ~16k directed edges after PyG makes it undirected), written to a temporary folder.
Threads are set with ``torch.set_num_threads`` in a fresh process per setting (intra-op pools do not
shrink reliably in one process). Prints the median seconds per epoch and the same-run ratio to the first
thread count, interleaving the settings ``--repeats`` times so a loaded machine hurts all of them alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
sys.path[:0] = [{root!r}, {tests!r}]
torch.set_num_threads({threads})
from pointseg.graphs.presets import get_preset
from pointseg.graphs.tasks import make_task
from pointseg.graphs.optim import make_optimizer
from pointseg.engine.trainer import train_epoch
preset = {{**get_preset({preset!r}), "name": {preset!r}}}
task = make_task("Cora", {data!r}, dict(preset["train"]), torch.device("cpu"))
torch.manual_seed(0)
model = task.build(task.model_config(preset, {{}}))
opt = make_optimizer(model, task.train_cfg, 0.01)
times = []
for _ in range({epochs} + 2):
    t = time.perf_counter()
    train_epoch(task, model, opt)
    task.evaluate(model)
    times.append(time.perf_counter() - t)
print(json.dumps(times[2:]))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", nargs="+", default=["gcn-2", "resgcn-7-graph"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    from graph_fixtures import write_planetoid
    with tempfile.TemporaryDirectory() as tmp:
        data = write_planetoid(Path(tmp), classes=7, feat=1433, n_train=140, n_extra=1068, n_test=1000)
        for preset in a.preset:
            per: dict[int, list[float]] = {t: [] for t in a.threads}
            for _ in range(a.repeats):
                for t in a.threads:
                    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), threads=t, preset=preset,
                                        data=str(data), epochs=a.epochs)
                    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                    per[t] += json.loads(out.stdout.strip().splitlines()[-1])
            base = statistics.median(per[a.threads[0]])
            for t in a.threads:
                med = statistics.median(per[t])
                print(f"{preset:<10} threads={t}: {med * 1000:8.1f} ms/epoch (median of {len(per[t])})  "
                      f"ratio to threads={a.threads[0]}: {med / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
