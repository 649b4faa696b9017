#!/usr/bin/env bash
# Behaviour fingerprint of a checkout, for refactors that must change nothing: the sample room's
# labels from `pointseg segment` (stride 1) and the weights after a 3-step training run from the
# shipped demo config, as sha256 prefixes. Compare two commits:
#   git worktree add /tmp/before REV && bash tools/behaviour_hash.sh /tmp/before /tmp/h1 && bash tools/behaviour_hash.sh "$PWD" /tmp/h2
# (the two runs print the same two lines when nothing changed). Uses .venv of this checkout.
set -e
PY="${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
cd "$1"
export PYTHONPATH="$1"
if [ -e "$2" ]; then echo "behaviour_hash: $2 exists; give a new folder" >&2; exit 2; fi
mkdir -p "$2"
"$PY" -m pointseg segment --out "$2/seg" --quiet --stride 1 --no-render > /dev/null 2>&1
sha256sum "$2/seg/sample_room.labels.npy" | cut -c1-16
cd "$2"
"$PY" -m pointseg train "$1/configs/demo_resgcn7_synthetic.yaml" epochs=1 max_steps=3 batch_size=2 \
  data.synth_rooms=2 data.synth_points=20000 data.num_points=256 data.root=synth out_dir=run --device cpu --quiet > /dev/null 2>&1
"$PY" - <<'PY'
import hashlib, torch
ck = torch.load("run/last.pt", weights_only=True)
h = hashlib.sha256()
for k, v in sorted(ck["model"].items()):
    h.update(v.numpy().tobytes())
print(h.hexdigest()[:16], ck["global_step"])
PY
