"""The host's link: sequence matching, error frames, timeouts, resynchronisation."""

from __future__ import annotations

import pytest
from test_firmware_sim import FirmwareSim, SimTransport
from xbar.firmware import protocol as P
from xbar.host.board import Board, FirmwareError, LinkError
from xbar.host.protocol_client import Link


class Scripted:
    """A port that answers each write with canned bytes."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.rx = bytearray()
        self.timeout: float | None = 0.01
        self.written = bytearray()

    def write(self, data: bytes) -> int:
        self.written += data
        self.rx += self.answer
        return len(data)

    def read(self, n: int = 1) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


def test_error_frame_becomes_firmware_error() -> None:
    link = Link(Scripted(P.encode(P.ERROR, 1, P.error_payload(P.E_RANGE, P.READ, "row 12"))))
    with pytest.raises(FirmwareError) as e:
        link.request(P.READ, b"")
    assert (e.value.code, e.value.command, e.value.reason) == (P.E_RANGE, P.READ, "row 12")
    assert "READ: out-of-range: row 12" in str(e.value)


def test_stale_and_garbled_frames_skipped() -> None:
    answer = (
        b"\x13\x37garbage\x00"
        + P.encode(P.HELLO | P.RESPONSE, 99)
        + P.encode(P.HELLO | P.RESPONSE, 1, b"ok")
    )
    link = Link(Scripted(answer))
    assert link.request(P.HELLO) == b"ok"


def test_wrong_response_code_is_link_error() -> None:
    link = Link(Scripted(P.encode(P.INFO | P.RESPONSE, 1)))
    with pytest.raises(LinkError, match="response code"):
        link.request(P.HELLO)


def test_silence_times_out() -> None:
    with pytest.raises(LinkError, match="no response"):
        Link(Scripted(), timeout=0.05).request(P.HELLO)
    with pytest.raises(LinkError, match="did not answer HELLO"):
        Board(Scripted(), timeout=0.2)


def test_sync_hello_never_carries_ctrl_c() -> None:
    port = Scripted()
    with pytest.raises(LinkError):
        Link(port, timeout=0.05).sync(0.3)
    assert port.written and 3 not in port.written and 4 not in port.written


def test_board_recovers_after_line_noise() -> None:
    sim = FirmwareSim()
    noisy = {"left": 1}

    def tap(data: bytes) -> bytes:
        if noisy["left"]:
            noisy["left"] -= 1
            return b"\xff\x01" * 40 + data[: len(data) // 2]  # garbage, then a torn frame
        return data

    transport = SimTransport(sim)
    board = Board(transport, retries=0)  # retries would hide the lost frame
    transport.tap = tap
    with pytest.raises(LinkError):
        board.link.request(P.HELLO, timeout=0.05)
    assert board.hello().profile == "xbar-10x10"  # the next frame resynchronises
    assert board.stats()["frames_dropped"] >= 1


def test_a_board_busy_with_a_dead_clients_program_is_waited_for() -> None:
    """A client killed mid-PROGRAM leaves the board write-verifying for seconds; it reads
    nothing meanwhile. The next client hears its BUSY frames and waits past its own HELLO
    timeout, saying so once, instead of declaring the board dead."""
    import struct
    import time

    from xbar.emulator.runtime import InProcessBoard

    n = 25  # cells far from reachable targets: each runs its 100 pulses (seconds in all)
    body = bytearray(
        struct.pack(P.PROGRAM_REQ, 0, 0, n, 100, 1e-9, 0.1, 2.0, 2.0, 0.25, 100, 10000)
    )
    for i in range(n):
        body += struct.pack(P.PROGRAM_CELL, i // 10, i % 10, 5e-5 if i % 2 else 1e-6)
    with InProcessBoard("xbar-10x10", 0, count_bytecodes=False) as emu:
        first = Board(emu.port, timeout=5)
        first.link.send(P.PROGRAM, bytes(body))
        time.sleep(0.2)
        first.link.port.close()  # killed: its answer is never taken
        said: list[str] = []
        t0 = time.monotonic()
        with Board(emu.port, timeout=2.0, on_busy=said.append) as second:
            waited = time.monotonic() - t0
            assert second.hello()
            assert second.link.busy is not None and second.link.busy[0] == "PROGRAM"
    assert waited > 2.0  # longer than the HELLO timeout: the BUSY frames kept it waiting
    assert len(said) == 1 and "busy finishing PROGRAM" in said[0], said
