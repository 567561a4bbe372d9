"""`benchmarks/bench_reliability` at CI size: a protocol fuzz on both runtimes, the adaptive
stream at BER 1e-5..1e-3 and a slice of the bad-file corpus, with the zero targets: no
crash, hang, reboot, E_HARDWARE, damage or line beyond the hard limit; no corrupted
result accepted; no traceback, exit code other than 1 or file written."""

from __future__ import annotations

import pytest
from xbar.firmware import protocol as P

from benchmarks import bench_reliability as bench
from benchmarks._reliability_fuzz import (
    REQUEST_LAYOUT,
    boundary_sweep,
    fuzz_runtime,
)


def test_boundary_cases_cover_every_command() -> None:
    import numpy as np

    cases = boundary_sweep(np.random.default_rng(0))
    assert {c for c, _ in cases} == set(P.COMMAND_NAMES) == set(REQUEST_LAYOUT)
    assert all(len(p) <= P.MAX_PAYLOAD for _, p in cases)
    assert len(cases) > 300


@pytest.mark.parametrize("runtime, frames", [("in-process", 400), ("micropython", 900)])
def test_fuzz_zero_targets(runtime: str, frames: int) -> None:
    if runtime == "micropython":
        from xbar.emulator.runtime_mpy import micropython_binary

        try:
            micropython_binary()
        except FileNotFoundError:  # pragma: no cover - the dev install always has it
            pytest.skip("no MicroPython interpreter")
    s = fuzz_runtime(runtime, frames, seed=5)
    assert s.frames == frames
    assert s.cases.get("random-bytes", 0) > 0 or s.cases["boundary"] == frames - 1
    assert s.examples == [], s.examples
    assert (s.hello_failures, s.hangs, s.crashes, s.reboots) == (0, 0, 0, 0)
    assert s.requested_reboots == 1  # the EXIT case, rebooted on Ctrl-D
    assert (s.e_hardware, s.damage_events, s.rating_errors, s.line_violations) == (0, 0, 0, 0)
    assert s.line_events > 0 and s.peak_line_v <= 4.0 + 1e-3
    assert s.answers["HELLO"] >= frames - 1  # one after each batched case


def test_streams_at_each_ber_accept_no_corrupted_result() -> None:
    rows = bench.part_streams(120, 1, log=lambda *_: None)
    assert [r["ber"] for r in rows] == [0.0, *bench.BERS]
    for r in rows:
        assert r["completion_pct"] == 100.0, r["errors"]
        assert r["corrupted_accepted"] == 0
        assert r["goodput_Bps"] > 0
    assert rows[-1]["resent"] > 0 and rows[-1]["flipped_bits"] > 0


def test_bad_file_corpus_slice() -> None:
    summary, failures = bench.part_corpus(limit=60)
    assert summary["cases"] >= 50
    assert failures == []
    assert (summary["tracebacks"], summary["exit_not_1"], summary["files_written"]) == (0, 0, 0)


def test_markdown_has_a_table_per_part() -> None:
    fuzz = [
        {
            "runtime": "in-process",
            "frames": 2,
            "cases": {"boundary": 1, "exit": 1},
            "frames_per_s": 1.0,
            "hello_failures": 0,
            "hangs": 0,
            "crashes": 0,
            "reboots": 0,
            "requested_reboots": 1,
            "e_hardware": 0,
            "damage_events": 0,
            "line_violations": 0,
            "line_events": 3,
            "peak_line_v": 0.1,
            "answers": {"HELLO": 2},
            "examples": [],
        }
    ]
    stream = bench._stream_row(0.0, [{"completed": False, "error": "e", "wall_s": 1.0}], None, 10)  # type: ignore[arg-type]
    bad = {
        "cases": 1,
        "by_kind": {"spec": 1},
        "tracebacks": 0,
        "exit_not_1": 0,
        "files_written": 0,
        "not_one_error_line": 0,
        "wall_s": 1.0,
    }
    meta = {"command": "x", "machine": "m", "date": "d", "wall_s": 1.0, "hard_v_line": 4.0}
    md = bench.markdown(meta, fuzz, [stream], bad)
    assert md.startswith("## Reliability")
    assert md.count("\n|---") == 3 and "`x`" in md
