"""The in-process runtime: firmware source under CPython on a real pty, `emu://` URLs,
per-board isolation, virtual time, resets and the link's error behaviour."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from hypothesis import given
from hypothesis import strategies as st
from xbar.emulator.hardware import WDT_RESET
from xbar.emulator.runtime import InProcessBoard
from xbar.firmware import protocol
from xbar.host.board import Board


def read_until(ser: serial.Serial, ending: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    ser.timeout = 0.05
    while not data.endswith(ending):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {ending!r} from the board; got {data[-300:]!r}")
        data += ser.read(1)
    return data


def firmware(tmp_path: Path, app_source: str) -> Path:
    """A firmware folder whose app.py is `app_source` (flat modules, as on a board)."""
    folder = tmp_path / "fw"
    folder.mkdir()
    (folder / "app.py").write_text(app_source)
    return folder


@pytest.fixture
def make_board():
    boards: list[InProcessBoard] = []

    def make(start: bool = True, **kwargs) -> InProcessBoard:
        b = InProcessBoard(**kwargs)
        boards.append(b)
        return b.start() if start else b

    # Boards whose test firmware never listens on the link are started with
    # start(wait=False): start() otherwise waits for the board to listen.

    yield make
    for b in boards:
        b.stop()
        assert not b._thread.is_alive()


@pytest.mark.parametrize("profile", ["xbar-10x10", "xbar-1x32"])
def test_hello_over_emu_url_runs_the_real_firmware(profile: str) -> None:
    port = serial.serial_for_url(f"emu://{profile}?seed=3", timeout=10)
    board = port.board
    try:
        with Board(port) as client:
            hello = client.hello()
            assert hello.profile == profile  # the firmware runs the emulated board's profile
            assert hello.protocol == protocol.VERSION
        assert board.model.clock.cycles > 0  # firmware init and the frame cost board time
        assert board.hw.bytecodes > 0
    finally:
        port.close()
    assert board.pty.closed and not board._thread.is_alive()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("emu://xbar-10x10?sed=1", "unknown parameter(s) sed"),
        ("emu://xbar-10x10?seed=x", "seed='x' is not an integer"),
        ("emu://xbar-10x10?micropython=maybe", "micropython='maybe' is not 0 or 1"),
        ("emu://xbar-10x10?flash=/tmp", "need the MicroPython runtime"),
        ("emu://xbar-10x10?micropython=1&compute=fast", "compute='fast' is not"),
        ("emu://xbar-10x10?device=pvk-nope", "no device preset 'pvk-nope'"),
        ("emu://xbar-10x10?noise=loud", "unknown noise preset 'loud'"),
    ],
)
def test_bad_emu_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(
        serial.SerialException, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        serial.serial_for_url(url)


@pytest.mark.parametrize(
    ("flags", "query"),
    [
        (["--flash", "/tmp"], "flash=/tmp"),
        (["--blank"], "firmware=0"),
        (["--measure-compute"], "compute=measured"),
        # (an unknown --device is refused while parsing: tests/test_cli_messages.py)
        (["--device", "pvk-best", "--blank"], "device=pvk-best&firmware=0"),
        (["--noise", "off", "--seed", "4", "--micropython"], "noise=off&seed=4&micropython=1"),
    ],
)
def test_xbar_emulate_and_emu_urls_build_boards_alike(flags: list[str], query: str) -> None:
    """Both parse into the same `BoardOptions`, defaults included, and `build_board`
    rejects a bad one with the same words."""
    import argparse

    from xbar.emulator.build import build_board
    from xbar.emulator.urlhandler.protocol_emu import board_from_url, options_from_url
    from xbar.host.cli.emulate import board_options, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    url = f"emu://?{query}"
    options = board_options(parser.parse_args(flags))
    assert options == options_from_url(url)
    assert board_options(parser.parse_args([])) == options_from_url("emu://xbar-10x10")
    if options.micropython:
        return  # a good combination: nothing to reject
    with pytest.raises(ValueError) as from_flags:
        build_board(options)
    with pytest.raises(ValueError) as from_url:
        board_from_url(url)
    assert str(from_url.value) == f"{url!r}: {from_flags.value}"


def test_url_picks_device_and_noise() -> None:
    from xbar.training.devices.device_model import DeviceModel

    best = DeviceModel.preset("pvk-best")
    with Board("emu://xbar-10x10?seed=2&device=pvk-best&noise=off") as board:
        emulated = board.link.port.board  # type: ignore[attr-defined]
        assert emulated.model.device.sigma_c2c == best.sigma_c2c
        assert not emulated.model.noise.read_noise_on
        # Noise off: a read returns the cells' conductances to within half an ADC step at
        # the highest TIA gain (this device's nS cells give only a few codes at 0.2 V).
        info = board.info()
        half_step = 0.5 * info.adc_lsb / 1e6 / 0.2  # S: half a code through 1 MΩ at 0.2 V
        g = board.read(v_read=0.2)
        assert g == pytest.approx(emulated.model.conductances(0), abs=half_step * 1.001)


def test_two_boards_in_one_process_share_no_state(make_board) -> None:
    a = make_board(seed=1)
    b = make_board(seed=2)
    with Board(serial.Serial(b.port, timeout=10)) as client:
        client.hello()
    b_cycles = b.mark()[1]  # settled: b's firmware waits for the host
    with Board(serial.Serial(a.port, timeout=10)) as client:
        client.hello()
        client.read(0, 0)
    assert a.namespace is not None and b.namespace is not None
    mods_a, mods_b = a.namespace.modules, b.namespace.modules
    for name in ("app", "protocol", "machine", "time", "micropython"):
        assert mods_a[name] is not mods_b[name]
    mods_a["profiles"].DEFAULT_PROFILE = "changed on a"
    assert mods_b["profiles"].DEFAULT_PROFILE == "xbar-10x10"
    assert b.mark()[1] == b_cycles  # a's work did not touch b's clock
    # CPython's own modules are untouched.
    import time as cpython_time

    assert sys.modules["time"] is cpython_time and not hasattr(cpython_time, "ticks_us")
    assert "machine" not in sys.modules


def test_virtual_time_advances_only_through_the_board(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path,
        (
            "import time\n"
            "def run(reader, writer):\n"
            "    t0 = time.ticks_us()\n"
            "    time.sleep_ms(250)\n"
            "    writer.write(b'%d\\n' % time.ticks_diff(time.ticks_us(), t0))\n"
            "    reader.read(1)\n"
        ),
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port)  # before boot: opening a port discards pending input
    b.start(wait=False)
    elapsed = int(read_until(ser, b"\n"))
    assert 250_000 <= elapsed < 251_000  # the sleep, plus a few calls' overhead
    assert b.board_seconds() >= 0.25
    ser.close()


def test_bytecode_charging_is_deterministic(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path,
        (
            "def run(reader, writer):\n"
            "    x = 0\n"
            "    for i in range(1000):\n"
            "        x += i * i\n"
            "    writer.write(b'done\\n')\n"
            "    reader.read(1)\n"
        ),
    )
    cycles = []
    for count in (True, True, False):
        b = make_board(firmware_dir=fw, count_bytecodes=count, start=False)
        ser = serial.Serial(b.port)
        b.start()
        read_until(ser, b"done\n")
        ser.close()
        cycles.append((b.hw.bytecodes, b.model.clock.cycles))
    assert cycles[0] == cycles[1]
    assert cycles[0][0] > 4000  # ~5 bytecodes per loop step
    assert cycles[2][0] == 0 and cycles[2][1] < cycles[0][1]


def test_firmware_exception_is_a_micropython_traceback_then_ctrl_d_reboots(
    make_board, tmp_path: Path
) -> None:
    fw = firmware(
        tmp_path,
        (
            "print('booting', 1)\n"
            "def helper():\n"
            "    raise ValueError('no such cell')\n"
            "def run(reader, writer):\n"
            "    helper()\n"
        ),
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port)  # before boot: opening a port discards pending input
    b.start(wait=False)
    text = read_until(ser, b">>> ")
    assert text.startswith(b"booting 1\r\n")  # print() goes to the link, as on a board
    assert b'Traceback (most recent call last):\r\n  File "app.py", line 5, in run\r\n' in text
    assert b"ValueError: no such cell\r\n" in text
    ser.write(b"\x04")
    read_until(ser, b"MPY: soft reboot\r\n")
    read_until(ser, b">>> ")
    assert b.boots == 2
    ser.close()


def test_ctrl_c_interrupts_firmware_and_watchdog_resets(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path,
        (
            "import machine, time\n"
            "def run(reader, writer):\n"
            "    writer.write(b'cause %d\\n' % machine.reset_cause())\n"
            "    if machine.reset_cause() != 3:\n"
            "        wdt = machine.WDT(timeout=100)\n"
            "        time.sleep_ms(150)\n"  # starved: the next call resets the board
            "        time.sleep_ms(1)\n"
            "    while True:\n"
            "        time.sleep_us(10)\n"
        ),
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port)  # before boot: opening a port discards pending input
    b.start(wait=False)
    read_until(ser, b"cause 1\n")
    read_until(ser, b"cause 3\n")  # rebooted by the watchdog, into the busy loop
    assert b.model.diagnostics.get("wdt_resets") == 1
    ser.write(b"\x03")
    assert b"KeyboardInterrupt" in read_until(ser, b">>> ")
    assert b.hw.reset_cause_code == WDT_RESET
    ser.close()


def test_hard_reset_reboots_a_waiting_firmware(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path, ("def run(reader, writer):\n    writer.write(b'up\\n')\n    reader.read(1)\n")
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port)  # before boot: opening a port discards pending input
    b.start(wait=False)
    read_until(ser, b"up\n")
    b.reset()
    read_until(ser, b"up\n")
    assert b.boots == 2
    ser.close()


def test_realtime_factor_is_board_time_over_wall_time(make_board) -> None:
    b = make_board()
    mark = b.mark()
    with Board(serial.Serial(b.port, timeout=10)) as client:
        client.read(0, 0)
    assert b.realtime_factor(mark) > 0


def test_pure_computation_is_interruptible_and_stoppable(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path,
        (
            "def run(reader, writer):\n"
            "    writer.write(b'spinning\\n')\n"
            "    while True:\n"
            "        pass\n"
        ),
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port)
    b.start(wait=False)
    read_until(ser, b"spinning\n")
    ser.write(b"\x03")
    assert b"KeyboardInterrupt" in read_until(ser, b">>> ")
    ser.write(b"\x04")  # reboot into the loop again; stop() must still end the thread
    read_until(ser, b"spinning\n")
    ser.close()
    b.stop()
    assert not b._thread.is_alive()


def test_board_time_and_energy_are_reproducible(make_board) -> None:
    """Same seed, same requests: the same cycles and joules, however the host's bytes
    were split in transit and whatever the host machine's speed."""
    results = []
    for _ in range(2):
        b = make_board(seed=7)
        with Board(serial.Serial(b.port, timeout=10)) as client:
            client.hello()
            client.read(0, 0)
            client.read(1, 2)
            _, cycles = b.mark()  # settled: the firmware waits for the host again
            results.append((cycles, b.hw.bytecodes, b.model.ledger.total()))
    assert results[0] == results[1]


def test_a_flooding_host_meets_flow_control_not_a_crash(make_board, tmp_path: Path) -> None:
    fw = firmware(
        tmp_path,
        (
            "def run(reader, writer):\n"
            "    writer.write(b'ready\\n')\n"
            "    while reader.read(1) != b'!':\n"
            "        pass\n"
            "    writer.write(b'drained\\n')\n"
            "    reader.read(1)\n"
        ),
    )
    b = make_board(firmware_dir=fw, start=False)
    ser = serial.Serial(b.port, write_timeout=30)
    b.start()
    read_until(ser, b"ready\n")
    ser.write(b"x" * 150_000 + b"!")  # over twice what the board buffers: writes block
    read_until(ser, b"drained\n", timeout=60)
    ser.close()


class TinyModel:
    """The least board model the machine layer runs on: a clock, nothing attached."""

    def __init__(self) -> None:
        self.clock = types.SimpleNamespace(cycles=0, mcu_hz=125_000_000)
        self.diagnostics: dict[str, int] = {}

    def charge(self, op: str, count: int = 1) -> None:
        self.clock.cycles += count

    def pin_write(self, pin: int, value: int) -> None:
        pass

    def pin_read(self, pin: int) -> int:
        return 0

    def spi_transfer(self, bus: int, tx: bytes, baudrate: int) -> bytes:
        return bytes(len(tx))

    def sleep_us(self, us: int) -> None:
        self.clock.cycles += 125 * us


def _shim(name: str):
    """A shim module of emulator/mpy/ loaded on a board namespace (no board running)."""
    from xbar.emulator.hardware import Hardware
    from xbar.emulator.runtime import FirmwareNamespace

    return FirmwareNamespace(Hardware(TinyModel()), None, None).load(name)


PERIOD = 1 << 30


@given(st.integers(0, PERIOD - 1), st.integers(-(PERIOD // 2), PERIOD // 2 - 1))
def test_ticks_arithmetic_wraps_like_micropython(t: int, delta: int) -> None:
    tm = _shim("time")
    later = tm.ticks_add(t, delta)
    assert 0 <= later < PERIOD
    assert tm.ticks_diff(later, t) == delta


@given(st.binary(max_size=600))
def test_the_bridge_survives_any_bytes_from_the_interpreter(data: bytes) -> None:
    """Garbage on the bridge (a corrupted interpreter) gets error replies or is dropped;
    the server thread ends only when the pipe closes (or the garbage asks for a reset)."""
    import os

    from xbar.emulator.hardware import Hardware
    from xbar.emulator.mpy_bridge import BridgeServer

    resets: list[int] = []
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    server = BridgeServer(Hardware(TinyModel()), req_r, resp_w, resets.append).start()
    try:
        os.write(req_w, data)
        os.close(req_w)
        server.thread.join(timeout=10)
        assert not server.thread.is_alive()
    finally:
        os.close(resp_r)
