"""A faulty line: the emulator's link faults (bit flips, lost bytes, stalls, both
directions, seeded) and the host's adaptive stream, which must finish with the outputs
of a clean line or fail with one error; a corrupted answer is never taken."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.emulator.build import BoardOptionsError
from xbar.emulator.link import FaultChannel, FaultSpec
from xbar.emulator.urlhandler.protocol_emu import board_from_url, options_from_url
from xbar.host.board import Board
from xbar.host.cli.main import main
from xbar.host.stream import AdaptiveStreamResult, load_reliably, stream_adaptive
from xbar.training.artifact import load_artifact

from benchmarks.models import iris_artifact

N = 200  # inputs per stream


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_artifact(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, 4))


def stream(iris: Path, x: np.ndarray, query: str) -> tuple[AdaptiveStreamResult, dict[str, int]]:
    """Load and stream x on an emulated board (noise off: outputs depend on inputs only)."""
    port = serial.serial_for_url(f"emu://xbar-10x10?seed=0&noise=off{query}", timeout=0.05)
    try:
        with Board(port, timeout=10) as board:
            board.link.adaptive = True
            _n_in, n_out = load_reliably(board, load_artifact(iris).plan)
            result = stream_adaptive(board, x, n_out)
        faults = port.board.pty.faults  # type: ignore[attr-defined]
        return result, ({} if faults is None else faults.counts())
    finally:
        port.close()


@pytest.fixture(scope="module")
def clean(iris: Path, inputs: np.ndarray) -> np.ndarray:
    result, faults = stream(iris, inputs, "")
    assert faults == {} and result.retried == 0
    return result.outputs


def _report(query: str, r: AdaptiveStreamResult) -> str:
    return (
        f"{query}: {r.wall_s:.2f} s, goodput {r.payload_bytes / r.wall_s:.0f} B/s, "
        f"{r.retried} resent of {r.frames_sent} ({r.lost} lost, {r.crc_errors} E_CRC), "
        f"frames {r.frame_sizes.min()}..{r.frame_sizes.max()}"
    )


@pytest.mark.parametrize(
    "query",
    [
        "&ber=1e-5&fault_seed=1",
        "&ber=1e-4&fault_seed=2",
        "&ber=1e-3&fault_seed=3",
        "&drop=1e-3&fault_seed=4",
        "&stall=2e-3&stall_ms=30&fault_seed=5",
        "&ber=1e-4&drop=1e-4&stall=1e-3&stall_ms=20&fault_seed=6",
    ],
)
def test_stream_on_a_faulty_line_gives_the_clean_outputs(
    iris: Path, inputs: np.ndarray, clean: np.ndarray, query: str
) -> None:
    result, faults = stream(iris, inputs, query)
    print(_report(query, result))
    np.testing.assert_array_equal(result.outputs, clean)
    assert faults["to_board_bytes"] > 0 and faults["to_host_bytes"] > 0
    if "ber=1e-3" in query:  # faults did hit both ways, and were recovered from
        assert faults["to_board_flipped"] > 0 and faults["to_host_flipped"] > 0
        assert result.retried > 0 and result.frame_sizes.min() < result.frame_sizes.max()
    if "drop" in query:
        assert faults["to_board_dropped"] + faults["to_host_dropped"] > 0
    if "stall" in query:
        assert faults["to_board_stalls"] + faults["to_host_stalls"] > 0


class _PausedHost:
    """The port as seen by a host whose answers stop arriving for `pause` s once, after
    `after` reads that brought bytes (a board or machine that is slow for a while): every
    answer is late, none is lost."""

    def __init__(self, port: serial.Serial, after: int, pause: float) -> None:
        self.port, self.after, self.pause, self.reads = port, after, pause, 0
        self.until = 0.0

    def read(self, size: int = 1) -> bytes:
        if time.monotonic() < self.until:
            time.sleep(0.01)
            return b""
        data = self.port.read(size)
        self.reads += bool(data)
        if self.reads == self.after:
            self.reads += 1
            self.until = time.monotonic() + self.pause
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self.port, name)


def test_late_answers_are_not_lost_frames(
    iris: Path, inputs: np.ndarray, clean: np.ndarray
) -> None:
    """The host stops reading for far longer than the learned retransmission timeout: the
    HELLO probe sent behind the late frames is answered after them, so no frame is sent
    (and computed) twice, and the outputs are the clean line's."""
    port = serial.serial_for_url("emu://xbar-10x10?seed=0&noise=off", timeout=0.05)
    try:
        with Board(port, timeout=10) as board:
            board.link.adaptive = True
            _n_in, n_out = load_reliably(board, load_artifact(iris).plan)
            board.link.port = _PausedHost(port, after=6, pause=4.0)  # type: ignore[assignment]
            result = stream_adaptive(board, inputs, n_out)
    finally:
        port.close()
    assert (result.retried, result.lost) == (0, 0), _report("paused host", result)
    np.testing.assert_array_equal(result.outputs, clean)


def test_corrupted_answers_are_never_taken(
    iris: Path, inputs: np.ndarray, clean: np.ndarray
) -> None:
    """Only the board's answers are hit, hard: many arrive corrupted; none is used."""
    result, faults = stream(iris, inputs[:80], "&ber=1e-3&fault_dir=to_host&fault_seed=7")
    assert faults["to_host_flipped"] > 3 and "to_board_bytes" not in faults
    assert result.lost > 0
    np.testing.assert_array_equal(result.outputs, clean[:80])


def test_fault_channel_is_seeded_and_independent_of_chunking() -> None:
    data = bytes(range(256)) * 200
    spec = FaultSpec(ber=1e-3, drop=1e-3, stall=1e-4, stall_ms=1, seed=9)
    whole, stall = FaultChannel(spec, "x").apply(data)
    ch = FaultChannel(spec, "x")
    parts = [ch.apply(data[i : i + 37]) for i in range(0, len(data), 37)]
    assert b"".join(p for p, _ in parts) == whole
    assert sum(s for _, s in parts) == pytest.approx(stall)
    assert 0.5 < ch.flipped / (len(data) * 8 * 1e-3) < 1.5
    assert 0.5 < ch.dropped / (len(data) * 1e-3) < 1.5
    other, _ = FaultChannel(FaultSpec(ber=1e-3, seed=10), "x").apply(data)
    assert other != whole
    assert FaultChannel(FaultSpec(), "x").apply(data) == (data, 0.0)


def test_fault_options_in_urls_and_flags() -> None:
    o = options_from_url("emu://xbar-10x10?ber=1e-4&drop=1e-5&fault_seed=3&fault_dir=to_host")
    assert (o.ber, o.drop, o.fault_seed, o.fault_dir) == (1e-4, 1e-5, 3, "to_host")
    assert o.faults.active and not options_from_url("emu://xbar-10x10").faults.active
    for bad, words in [
        ("ber=2", "ber 2.0 is not a probability"),
        ("drop=x", "drop='x' is not a number"),
        ("fault_dir=up", "fault direction 'up'"),
    ]:
        with pytest.raises(BoardOptionsError, match=words):
            board_from_url(f"emu://xbar-10x10?{bad}")
    import argparse

    from xbar.host.cli.emulate import board_options, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    flags = ["--ber", "1e-4", "--drop", "1e-5", "--fault-seed", "3", "--fault-dir", "to_host"]
    assert board_options(parser.parse_args(flags)) == o


def test_xbar_infer_completes_at_ber_1e_3_and_reports_goodput(
    iris: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "emu://xbar-10x10?seed=0&noise=off&ber=1e-3&fault_seed=11"
    assert main(["infer", "--port", url, "--model", str(iris), "--dataset", "iris"]) == 0
    out = capsys.readouterr().out
    assert "predictions equal to the int8 reference" in out
    assert "goodput" in out and "frames resent" in out


@pytest.mark.slow
def test_micropython_stream_at_ber_1e_4(iris: Path, inputs: np.ndarray, clean: np.ndarray) -> None:
    from xbar.emulator.runtime_mpy import micropython_binary

    try:
        micropython_binary()
    except FileNotFoundError:  # pragma: no cover - the dev install always has it
        pytest.skip("no MicroPython interpreter")
    result, faults = stream(iris, inputs[:60], "&micropython=1&ber=1e-4&fault_seed=2")
    assert faults["to_board_bytes"] > 0
    np.testing.assert_array_equal(result.outputs, clean[:60])
