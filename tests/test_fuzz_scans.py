"""Seeded fuzzing of every scan reader: a damaged file is a clean error naming it, or a read
consistent with what the file says; never another exception, a hang or garbage."""
from __future__ import annotations

import importlib.util
import signal
from collections import Counter
from pathlib import Path

import pytest

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "fuzz_scans.py"
_spec = importlib.util.spec_from_file_location("fuzz_scans", _TOOL)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzz.write_seed_files(tmp_path_factory.mktemp("seeds"))


def test_seed_files_cover_every_reader_and_read_back(seeds):
    from pointseg.io.scans import read_scan
    expected = {"ply_binary", "ply_ascii", "pcd_ascii", "pcd_binary", "xyz", "txt", "npy", "npz"}
    assert expected <= set(seeds)
    for fmt, path in seeds.items():
        s = read_scan(path)
        assert s.num_points == fuzz.N_POINTS, fmt


def test_three_hundred_mutations_give_clean_errors_or_consistent_reads(seeds, tmp_path):
    bad, counts = [], Counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for fmt, cs in fuzz.make_cases(seeds, 320, seed=1):
            signal.alarm(10)
            try:
                outcome, how, detail = fuzz.run_case(seeds, fmt, cs, tmp_path)
            except _Hang:
                outcome, how, detail = "hang", "?", ""
            finally:
                signal.alarm(0)
            counts[outcome] += 1
            if outcome not in ("clean", "read"):
                bad.append(f"{fmt} {cs}: {outcome}: {how}: {detail}")
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not bad, "\n".join(bad[:20])
    assert counts["clean"] > 0 and counts["read"] > 0


def test_unchanged_file_must_read_as_itself(seeds):
    from pointseg.io.scans import read_scan
    p = seeds["ply_ascii"]
    data = p.read_bytes()
    assert fuzz.check_scan(p, data, data, read_scan(p))[0] == "read"
