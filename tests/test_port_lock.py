"""One owner per port: a second client on a port in use (in this process or another) is
refused with one line naming the port as busy, and the first client is not disturbed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.emulator.runtime import InProcessBoard
from xbar.host.board import Board, BoardError, PortBusyError, PortError

XBAR = str(Path(sys.executable).parent / "xbar")


@pytest.fixture
def served():
    """An emulated board behind a real pty (as `xbar emulate` serves one)."""
    with InProcessBoard("xbar-10x10", 0, count_bytecodes=False) as board:
        yield board


def test_second_open_of_a_pty_is_refused_and_the_first_keeps_working(
    served: InProcessBoard,
) -> None:
    with Board(served.port, timeout=5) as first:
        with pytest.raises(PortBusyError) as e:
            Board(served.port, timeout=1)
        assert isinstance(e.value, PortError) and isinstance(e.value, BoardError)
        message = str(e.value)
        assert message.startswith(f"{served.port} is busy") and "\n" not in message
        assert first.hello().profile == "xbar-10x10"  # no answers stolen, no stray frames
        assert first.stats()["errors"] == 0
    with Board(served.port, timeout=5) as again:  # released on close
        assert again.hello().protocol >= 1


def test_a_second_xbar_process_gets_one_line_naming_the_port(
    served: InProcessBoard, tmp_path: Path
) -> None:
    out_dir = str(tmp_path / "char")
    with Board(served.port, timeout=5) as first:
        out = subprocess.run(
            [XBAR, "characterize", "--port", served.port, "--cells", "0:0:0", "--out", out_dir],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert out.returncode == 1, out
        err = out.stderr.strip()
        assert err.startswith(f"xbar: error: {served.port} is busy"), err
        assert "\n" not in err and "Traceback" not in err
        assert "xbar firmware" not in err and "response code" not in err
        assert first.hello().profile == "xbar-10x10"
        assert first.stats()["errors"] == 0
    assert not (tmp_path / "char").exists()


def test_emu_url_ports_are_locked_too() -> None:
    """The emu:// handler's port is pyserial's POSIX Serial on the board's pty: the same
    flock holds, so the pty an emu:// board runs on cannot be opened twice."""
    import serial

    port = serial.serial_for_url("emu://xbar-10x10?seed=0", timeout=0.05, exclusive=True)
    try:
        pty = port.board.port  # type: ignore[attr-defined]
        with pytest.raises(PortBusyError, match=f"^{pty} is busy"):
            Board(pty, timeout=1)
        with Board(port, timeout=5) as client:
            assert client.hello().profile == "xbar-10x10"
    finally:
        port.close()
    with Board("emu://xbar-10x10?seed=0", timeout=5) as board:  # Board opens it exclusively
        assert board.link.port.exclusive  # type: ignore[attr-defined]
