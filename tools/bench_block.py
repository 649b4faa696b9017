"""Block forward throughput of the default checkpoint (issue 27, item 4): the block scoring as it
was at commit c792cf2 (the module's own forward, one call per batch with torch's intra-op threads,
softmax and transposes in ``(B, C, P)``) against the current ``segmentation.forward.block_scores``
(the folded DGCNN, one Python thread per batch), in one process, interleaved::

    PYTHONPATH=. python tools/bench_block.py                  # 16 blocks of the sample room, 3 rounds
    PYTHONPATH=. python tools/bench_block.py --blocks 42 --repeats 5
    PYTHONPATH=. python tools/bench_block.py --segment 2      # + `pointseg segment` of the sample room

Blocks: the bundled sample room cut as the block-level scoring cuts it (1 m columns, 4,096 points,
9 channels, seed 0); batch 8, kNN k = 20, as ``pointseg segment`` defaults. Prints

* agreement of the new scores with the old ones on every block (argmax equality, max softmax
  difference, share of kNN rows that differ at stage 2 and 3: float32 near-ties);
* points per second, median of interleaved rounds, at torch's default thread count and at one
  thread, and the ratios new / old (a shared, noisy machine: read only the ratios of one run);
* a split of one batch's time by part, old and new, one thread (manual timing of each part);
* the GFLOP/s the new forward reaches against a plain float32 matrix product on this CPU;
* with ``--segment R``: ``segment_scan`` of the whole sample room (the command's defaults: compact
  sparse columns; and with ``compact=False``, every column a padded block), R interleaved rounds,
  old (``forward.FOLDED = False``: the module's forward everywhere, as at c792cf2) against new,
  and how many labels differ.

No timing is asserted anywhere.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def old_block_scores(model, blocks, device, batch_size):
    """segmentation.forward.block_scores at commit c792cf2."""
    out = []
    for s in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[s:s + batch_size]).to(device).transpose(1, 2).contiguous()
        out.append(torch.softmax(model(x).float(), dim=1).transpose(1, 2).cpu())
    return torch.cat(out)


def flops_per_block(model, n: int) -> dict[str, float]:
    """Multiply-adds x 2 of one block of ``n`` points as the folded forward computes them."""
    cfg = model.cfg
    k = cfg.k
    lo, hi = cfg.knn_channels
    out = {"knn gram": 0.0, "edge layers": 0.0, "node terms": 0.0, "1x1 convs": 0.0}
    width = cfg.in_channels
    for i, widths in enumerate(cfg.stages):
        out["knn gram"] += 2.0 * (hi - lo if i == 0 else width) * n * n
        out["node terms"] += 2.0 * n * width * 2 * widths[0]
        for a, b in zip(widths[:-1], widths[1:]):
            out["edge layers"] += 2.0 * n * k * a * b
        width = widths[-1]
    f = model.feature_channels
    chans = [f, *cfg.head_channels]
    out["1x1 convs"] = 2.0 * n * (f * cfg.emb_channels + sum(a * b for a, b in zip(chans[:-1], chans[1:]))
                                  + cfg.head_channels[-1] * cfg.out_channels)
    return out


def timed(fn, repeats: int = 3) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def split_old(model, x) -> dict[str, float]:
    """Seconds of each part of the module's forward on ``x (B, 9, N)`` (one thread)."""
    parts: dict[str, float] = {}
    lo, hi = model.cfg.knn_channels
    h, feats = x, []
    for i, stage in enumerate(model.stages):
        inp = h[:, lo:hi] if i == 0 else h
        g = model.knn(inp)
        parts[f"kNN {i + 1}"] = timed(lambda: model.knn(inp))
        src = h
        parts[f"EdgeConv {i + 1} (node GEMM, gathers, edge MLP, BN, max)"] = timed(lambda: stage(src, g))
        h = stage(src, g)
        feats.append(h)
    f = torch.cat(feats, 1)
    parts["concat"] = timed(lambda: torch.cat(feats, 1))
    e = model.embed.lin(f)
    parts["conv6 1x1 GEMM"] = timed(lambda: model.embed.lin(f))
    e2 = model.embed.post(e)
    parts["conv6 BN + LeakyReLU"] = timed(lambda: model.embed.post(e))
    glob = model.pool(e2)
    parts["global max"] = timed(lambda: model.pool(e2))
    h7 = model._first_head_layer(glob, f)
    parts["conv7 (GEMM + BN + act)"] = timed(lambda: model._first_head_layer(glob, f))
    h8 = model.head[1](h7)
    parts["conv8 (GEMM + BN + act)"] = timed(lambda: model.head[1](h7))
    parts["conv9"] = timed(lambda: model.classifier(h8))
    return parts


def split_new(plan, xb) -> dict[str, float]:
    """Seconds of each part of the folded forward on ``xb (B, N, 9)`` (one thread)."""
    from pointseg.nn.folded import HEAD_ROWS, act_
    m = plan.model
    parts: dict[str, float] = {}
    B, N, _ = xb.shape
    lo, hi = m.cfg.knn_channels
    widths = [s.out_channels for s in plan.stages]
    feats = xb.new_empty(B, N, sum(widths))
    h, off = xb, 0
    for i, stage in enumerate(plan.stages):
        inp = (xb[:, :, lo:hi] if i == 0 else h).transpose(1, 2)
        g = m.knn(inp)
        parts[f"kNN {i + 1}"] = timed(lambda: m.knn(inp))
        out = feats[:, :, off:off + widths[i]]
        src = h
        parts[f"EdgeConv {i + 1} (node GEMM, fused edge pass)"] = timed(lambda: stage(src, g, out))
        h = out
        off += widths[i]
    flat = feats.view(B * N, -1)
    emb = plan.embed

    def conv6_max():
        best = xb.new_empty(B, emb.out_channels)
        for b in range(B):
            v = None
            for s in range(b * N, (b + 1) * N, HEAD_ROWS):
                r = torch.mm(flat[s:min((b + 1) * N, s + HEAD_ROWS)], emb.weight_t).amax(0)
                v = r if v is None else torch.maximum(v, r, out=v)
            best[b] = v
        return emb.act_(best.add_(emb.shift))
    parts["conv6 GEMM + max (BN folded, act after the max)"] = timed(conv6_max)
    glob = conv6_max()
    const = torch.addmm(plan.head_g.shift, glob, plan.head_g.weight_t)
    logits = xb.new_empty(B, N, plan.classifier.out_channels)
    rows = logits.view(B * N, -1)

    def head():
        for b in range(B):
            for s in range(b * N, (b + 1) * N, HEAD_ROWS):
                e = min((b + 1) * N, s + HEAD_ROWS)
                z = act_(torch.addmm(const[b], flat[s:e], plan.head[0].weight_t), plan.head[0].slope)
                for layer in plan.head[1:]:
                    z = layer.act_(torch.addmm(layer.shift, z, layer.weight_t))
                torch.addmm(plan.classifier.shift, z, plan.classifier.weight_t, out=rows[s:e])
    parts["conv7-conv9 (folded GEMMs, in-place act)"] = timed(head)
    parts["softmax (B, N, C)"] = timed(lambda: torch.softmax(logits, dim=-1))
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=16, help="blocks timed (of the sample room's 42)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per configuration")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--checkpoint", default=None, help="default: segment's default checkpoint")
    ap.add_argument("--segment", type=int, default=0, metavar="R",
                    help="also time segment_scan of the sample room, R interleaved rounds")
    args = ap.parse_args()

    from pointseg.assets import asset
    from pointseg.data.block_gen import room_to_blocks
    from pointseg.io.scans import read_scan
    from pointseg.segmentation import forward
    from pointseg.segmentation.checkpoint import load_model
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT

    model = load_model(args.checkpoint or DEFAULT_CHECKPOINT, "cpu").network.eval()
    scan = read_scan(asset("sample_room.ply"))
    all_blocks, _ = room_to_blocks(scan.xyz, scan.rgb, 1.0, 1.0, 4096, min_points=100, rng=0)
    blocks = all_blocks[:args.blocks]
    dev = torch.device("cpu")
    bs = args.batch_size
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default intra-op threads {default_threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{len(blocks)} blocks of {blocks.shape[1]} points x {blocks.shape[2]} channels, batch {bs}, "
          f"k = {model.cfg.k}")

    # --- agreement, every block of the room
    plan = forward.prepared(model)
    if plan is None:
        raise SystemExit("the model has no folded plan (not an eval-mode DGCNN on the CPU)")
    old = old_block_scores(model, all_blocks, dev, bs)
    new = forward.block_scores(model, all_blocks, dev, bs)
    agree = (old.argmax(-1) == new.argmax(-1)).double().mean().item()
    print(f"\nagreement on all {len(all_blocks)} blocks ({old.shape[0] * old.shape[1]:,} points): "
          f"argmax equal {100 * agree:.4f} %, max |softmax new - old| {(new - old).abs().max().item():.2e}, "
          f"mean {(new - old).abs().mean().item():.2e}")
    far = (new - old).abs().amax(-1) > 1e-3
    print(f"  points whose softmax differs by more than 1e-3: {int(far.sum())} of {far.numel():,} "
          f"(in {int(far.any(1).sum())} block(s): kNN near-ties in float32)")
    with torch.no_grad():
        x8 = torch.from_numpy(all_blocks[:bs])
        ref_feats = model.features(x8.transpose(1, 2).contiguous())
        ref_graphs = model.graphs(x8.transpose(1, 2).contiguous())
        h = x8
        for i, stage in enumerate(plan.stages):
            if i:
                g_new = model.knn(h.transpose(1, 2))
                rows = (g_new != ref_graphs[i]).any(-1).double().mean().item()
                print(f"  kNN {i + 1} rows differing (float32 near-ties on the new features): {100 * rows:.3f} %")
            out = x8.new_empty(x8.shape[0], x8.shape[1], stage.out_channels)
            stage(h, ref_graphs[i], out)
            d = (out - ref_feats[i].transpose(1, 2)).abs().max().item()
            print(f"  EdgeConv {i + 1} on the same graph: max |new - old| {d:.2e} "
                  f"(scale {ref_feats[i].abs().max().item():.1f})")
            h = ref_feats[i].transpose(1, 2)

    # --- throughput, interleaved rounds
    def run_old():
        old_block_scores(model, blocks, dev, bs)

    def run_new(block_threads: bool):
        def f():
            before = forward.BLOCK_THREADS
            forward.BLOCK_THREADS = block_threads
            try:
                forward.block_scores(model, blocks, dev, bs)
            finally:
                forward.BLOCK_THREADS = before
        return f

    configs = [("old (c792cf2)", default_threads, run_old),
               ("new", default_threads, run_new(True)),
               ("new, intra-op threads instead", default_threads, run_new(False)),
               ("old (c792cf2)", 1, run_old),
               ("new", 1, run_new(True))]
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for i, (_, threads, fn) in enumerate(configs):      # warm-up (kernel build, plan, allocator)
        torch.set_num_threads(threads)
        fn()
    for _ in range(args.repeats):
        for i, (_, threads, fn) in enumerate(configs):
            torch.set_num_threads(threads)
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    torch.set_num_threads(default_threads)
    pts = len(blocks) * blocks.shape[1]
    print(f"\nthroughput ({args.repeats} interleaved rounds, median; load average now {os.getloadavg()[0]:.1f}):")
    base = {}
    for i, (name, threads, _) in enumerate(configs):
        med = statistics.median(times[i])
        if name.startswith("old"):
            base[threads] = med
        ratio = base[threads] / med
        print(f"  {name:32s} {threads} thread(s): {med:7.2f} s  {pts / med:9,.0f} points/s  x{ratio:.2f}  "
              f"(rounds: {', '.join(f'{t:.2f}' for t in times[i])})")

    # --- split of one batch, one thread
    torch.set_num_threads(1)
    with torch.no_grad():
        xb = torch.from_numpy(all_blocks[:bs])
        so = split_old(model, xb.transpose(1, 2).contiguous())
        sn = split_new(plan, xb)
        t_old = timed(lambda: model(xb.transpose(1, 2).contiguous()))
        t_new = timed(lambda: plan(xb))
    print(f"\nsplit of one batch of {bs} blocks, one thread (best of 3 per part):")
    for title, parts, total in (("old", so, t_old), ("new", sn, t_new)):
        print(f"  {title}: whole forward {1e3 * total:.0f} ms (parts sum {1e3 * sum(parts.values()):.0f} ms)")
        for k_, v in parts.items():
            print(f"    {k_:50s} {1e3 * v:7.1f} ms  {100 * v / total:5.1f} %")

    # --- GFLOP/s
    fl = flops_per_block(model, blocks.shape[1])
    total_fl = sum(fl.values()) * bs
    a = torch.randn(bs * blocks.shape[1], 192)
    w = torch.randn(192, 1024)
    t_mm = timed(lambda: a @ w)
    mm_rate = 2.0 * a.shape[0] * 192 * 1024 / t_mm / 1e9
    print(f"\nFLOPs per block: {sum(fl.values()) / 1e9:.2f} G ("
          + ", ".join(f"{k_} {v / 1e9:.2f}" for k_, v in fl.items()) + ")")
    print(f"one thread: new forward {total_fl / t_new / 1e9:.1f} GFLOP/s, old {total_fl / t_old / 1e9:.1f} "
          f"GFLOP/s (same FLOP count), matrix product {a.shape[0]}x192 @ 192x1024: {mm_rate:.1f} GFLOP/s")
    torch.set_num_threads(default_threads)
    if args.segment:
        bench_segment(args.checkpoint or DEFAULT_CHECKPOINT, scan, args.segment)


def bench_segment(checkpoint, scan, rounds: int) -> None:
    from pointseg.segmentation import forward
    from pointseg.segmentation.checkpoint import load_model
    from pointseg.segmentation.inference import SlidingConfig
    from pointseg.segmentation.segment import segment_scan
    loaded = load_model(checkpoint, "cpu")
    res: dict[tuple[bool, bool], list] = {}
    for _ in range(rounds):
        for compact in (True, False):
            for folded in (False, True):
                forward.FOLDED = folded
                try:
                    t = time.perf_counter()
                    seg = segment_scan(loaded, scan, SlidingConfig(compact=compact), progress=False)
                    res.setdefault((compact, folded), []).append((time.perf_counter() - t, seg.labels))
                finally:
                    forward.FOLDED = True
    n = len(scan.xyz)
    print(f"\nsegment_scan of the sample room ({n:,} points), {rounds} interleaved rounds, median "
          f"(load average now {os.getloadavg()[0]:.1f}):")
    for compact in (True, False):
        old_t = statistics.median(t for t, _ in res[(compact, False)])
        new_t = statistics.median(t for t, _ in res[(compact, True)])
        changed = int((res[(compact, False)][0][1] != res[(compact, True)][0][1]).sum())
        rounds_txt = "; ".join(f"{a[0]:.1f} / {b[0]:.1f}" for a, b in zip(res[(compact, False)], res[(compact, True)]))
        print(f"  {'compact (default)' if compact else 'compact=False':18s} old {old_t:6.1f} s  new {new_t:6.1f} s  "
              f"x{old_t / new_t:.2f}  ({n / old_t:,.0f} -> {n / new_t:,.0f} points/s; rounds old / new: "
              f"{rounds_txt}); labels changed {changed} of {n:,}")


if __name__ == "__main__":
    main()
