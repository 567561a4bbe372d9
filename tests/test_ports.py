"""Finding boards and handing them to MicroPython's tools: `xbar ports` tells an xbar board
from a MicroPython REPL without disturbing either, `--port auto` picks the one xbar board
or names every port it saw, and `mpremote` gets through to a board running the firmware
(its CR, Ctrl-C between frames stops the firmware) while a 0x03 inside a frame does not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import serial
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo
from xbar.emulator.build import BoardOptions, build_board
from xbar.emulator.runtime import InProcessBoard
from xbar.emulator.runtime_mpy import micropython_binary
from xbar.firmware import protocol as P
from xbar.host import ports
from xbar.host.board import Board, NotXbarError
from xbar.host.cli.main import main

try:
    micropython_binary()
    HAVE_MPY = True
except FileNotFoundError:  # pragma: no cover - the dev install always has it
    HAVE_MPY = False
needs_mpy = pytest.mark.skipif(not HAVE_MPY, reason="no MicroPython interpreter")


@pytest.fixture
def xbar_board() -> Iterator[InProcessBoard]:
    board = InProcessBoard("xbar-10x10", 0, count_bytecodes=False)
    with board:
        yield board


@pytest.fixture
def repl_board() -> Iterator[object]:
    """A MicroPython board with nothing of xbar on it (`xbar emulate --micropython --blank`)."""
    with build_board(BoardOptions(micropython=True, blank=True)) as board:
        yield board


def _repl_eval(port: str, line: bytes) -> bytes:
    with serial.Serial(port, timeout=0.2) as s:
        s.write(line + b"\r")
        out = b""
        end = time.monotonic() + 10
        while not out.endswith(b">>> ") and time.monotonic() < end:
            out += s.read(256)
    return out


def test_an_xbar_board_answers_with_its_profile_and_versions(xbar_board: InProcessBoard) -> None:
    state, detail, hello = ports.probe(xbar_board.port)
    assert state == ports.XBAR and hello is not None
    assert hello.profile == "xbar-10x10" and hello.protocol == P.VERSION
    assert "profile xbar-10x10" in detail and "protocol 1" in detail


@needs_mpy
def test_a_micropython_repl_is_recognised_and_left_usable(repl_board: object) -> None:
    port = repl_board.port  # type: ignore[attr-defined]
    state, detail, hello = ports.probe(port)
    assert state == ports.MICROPYTHON and hello is None
    assert "MicroPython v" in detail and "xbar flash" in detail
    # Nothing ran, nothing is left half-typed: the next line a person types works.
    out = _repl_eval(port, b"print(6*7)")
    assert b"\r\n42\r\n>>> " in out and b"Error" not in out, out


def test_probe_frame_is_inert_in_paste_mode() -> None:
    seq, wire = ports.probe_frame()
    assert wire[0] == 0 and wire[1] == 0x05  # Ctrl-E: paste mode
    assert not {0x02, 0x03, 0x04} & set(wire[2:])
    assert P.Decoder().feed(wire) and seq > 0


def test_a_busy_port_is_left_alone(xbar_board: InProcessBoard) -> None:
    with Board(xbar_board.port, timeout=5) as first:
        state, detail, _ = ports.probe(xbar_board.port)
        assert state == ports.BUSY and "busy" in detail
        assert first.hello().profile == "xbar-10x10"
        assert first.stats()["errors"] == 0


def test_xbar_ports_lists_named_ports_as_json(
    xbar_board: InProcessBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ports", xbar_board.port, "--json"]) == 0
    found = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    mine = found[xbar_board.port]
    assert mine["state"] == "xbar" and mine["hello"]["profile"] == "xbar-10x10"
    assert main(["ports", xbar_board.port]) == 0
    out = capsys.readouterr().out
    assert xbar_board.port in out and max(map(len, out.splitlines())) <= 100


def _listed(monkeypatch: pytest.MonkeyPatch, devices: list[str]) -> None:
    infos = []
    for device in devices:
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid, info.description = 0x2E8A, 0x0005, "Board in FS mode"
        infos.append(info)
    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: infos)


def test_port_auto_picks_the_single_xbar_board(
    xbar_board: InProcessBoard,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _listed(monkeypatch, ["/dev/ttyNONE0", xbar_board.port])
    assert ports.pick() == xbar_board.port
    assert main(["repl", "--port", "auto"]) == 0
    assert xbar_board.port in capsys.readouterr().out


def test_port_auto_names_what_it_saw(
    xbar_board: InProcessBoard,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _listed(monkeypatch, ["/dev/ttyNONE0"])
    assert main(["infer", "--port", "auto", "--model", "m.xbar", "--dataset", "iris"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("xbar: error: --port auto: no xbar board found")
    assert "/dev/ttyNONE0" in err and "\n" not in err
    with InProcessBoard("xbar-10x10", 1, count_bytecodes=False) as second:
        _listed(monkeypatch, [xbar_board.port, second.port])
        assert main(["repl", "--port", "auto"]) == 1
        err = capsys.readouterr().err
        assert "2 xbar boards" in err and second.port in err and "--port" in err


def test_a_frame_byte_0x03_is_data_and_cr_ctrl_c_between_frames_interrupts() -> None:
    dec = P.Decoder()
    payload = b"\r\x03\x03\r\x03" * 20
    frames = [P.encode(P.INFER, 0x0300, payload), P.encode(P.HELLO, 0x0D00)]
    assert frames[1][:1] in (b"\x03", b"\x0d")  # frames may start with these bytes too
    got = dec.feed(b"\x00" + frames[0] + b"\x03" + P.encode(P.HELLO, 0x0100)[1:])
    assert [f[2] for f in got][:1] == [payload]
    dec = P.Decoder()
    for wire in frames:
        assert len(dec.feed(wire)) == 1
    for seq in range(0x0100, 0x10000, 0x100):  # low byte 0: every frame starts 0x03
        assert len(dec.feed(P.encode(P.HELLO, seq))) == 1
    assert dec.dropped == 0
    dec = P.Decoder()
    results = [dec.push(b) for b in b"\r\x03"]
    assert results[-1] == P.DROPPED and dec.last_drop == P.DROP_INTERRUPT
    for other in (b"\x03\x03", b"\x03\r", b"\r\x02"):  # not the knock: frame bytes
        dec = P.Decoder()
        assert [dec.push(b) for b in other] == [P.NOTHING, P.NOTHING]


@needs_mpy
def test_mpremote_gets_through_to_a_board_running_the_firmware() -> None:
    with build_board(BoardOptions(micropython=True)) as board:
        with Board(board.port, timeout=10) as client:
            assert client.hello().profile == "xbar-10x10"
        out = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", board.port, "exec", "print(1)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.strip() == "1", out
        with pytest.raises(NotXbarError):  # at the REPL now: a soft reset starts xbar again
            Board(board.port, timeout=2)


@needs_mpy
def test_xbar_repl_returns_the_board_to_its_repl(capsys: pytest.CaptureFixture[str]) -> None:
    with build_board(BoardOptions(micropython=True)) as board:
        assert main(["repl", "--port", board.port]) == 0
        assert "MicroPython REPL" in capsys.readouterr().out
        out = _repl_eval(board.port, b"print(6*7)")
        assert b"42" in out
        assert main(["repl", "--port", board.port]) == 0
        assert "already at the MicroPython REPL" in capsys.readouterr().out
