"""A minimal in-test stand-in for the board under the firmware, plus its own checks.

`FirmwareSim` loads the firmware's flat modules from firmware/ into a private namespace
(their own `machine`, `time`, `micropython` and `gc`), wired to `SimBoard`: a small,
ideal model of the reference board that decodes the real SPI bytes (AD5676 words,
ADG714 frame, ADS8688 frames), computes column currents of an ideal crossbar, moves
conductances under pulses with a simple threshold law, and records every line voltage
the DACs put on a switched-in line. It lets the protocol, dispatcher and safety tests
run fast and deterministically without the full emulator; the end-to-end tests use the
emulator itself.
"""

from __future__ import annotations

import builtins
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from xbar.emulator.runtime import VIPER_BUILTINS

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

DAC_LSB = 20.0 / 65536.0
ADC_LSB = 20.48 / 65536.0
RF = (1e3, 1e4, 1e5, 1e6)


def line_volts(code: int) -> float:
    return 20.0 * code / 65536.0 - 10.0


class SimBoard:
    """Ideal board: DAC/switch/ADC byte decoding, ideal crossbar, threshold switching."""

    G_MIN = 1e-8
    G_MAX = 2e-6
    V_TH = 1.5  # V across a cell before it moves
    RATE = 2e-4  # fraction of the window per volt above threshold per microsecond

    def __init__(self, geom: Any, g: np.ndarray | None = None, seed: int = 0) -> None:
        self.geom = geom
        rng = np.random.default_rng(seed)
        shape = (geom.arrays, geom.rows, geom.cols)
        self.g = (
            np.array(g, dtype=float).reshape(shape)
            if g is not None
            else rng.uniform(2e-7, 1e-6, size=shape)
        )
        self.pins: dict[int, int] = {}
        n_dac = geom.dac_chips
        self.dac_in = np.full((n_dac, 8), 32768, dtype=np.int64)
        self.dac_out = np.full((n_dac, 8), 0, dtype=np.int64)  # power-up: zero scale
        self.sw = bytearray(geom.sw_chips)
        self.adc_ch = np.zeros(geom.adc_chips, dtype=np.int64)
        self.adc_result = np.full(geom.adc_chips, 32768, dtype=np.int64)
        self.clock_us = 0.0
        self.t_seg = 0.0
        self.max_line_v = 0.0  # largest |V| on any line connected to its DAC
        self.max_read_v = 0.0  # largest |V| on a row while some column sat on a TIA
        self.shorts = 0
        self.wdt_fed = 0
        self.events: list[tuple[str, Any]] = []

    # ---- wiring helpers ----------------------------------------------------------
    def modes(self) -> np.ndarray:
        """(lines, 3) bool: DAC, TIA, ground switch closed, per line."""
        bits = np.unpackbits(np.frombuffer(bytes(self.sw), np.uint8), bitorder="little")
        return bits[: 3 * self.geom.lines].reshape(self.geom.lines, 3).astype(bool)

    def volts(self) -> np.ndarray:
        """Voltage of every line: its DAC's if switched in, else 0 V (ground, TIA node)."""
        codes = self.dac_out.reshape(-1)[: self.geom.lines]
        return np.where(self.modes()[:, 0], 20.0 * codes / 65536.0 - 10.0, 0.0)

    def line_mode(self, line: int) -> int:
        m = self.modes()[line]
        return int(np.argmax(m)) if m.any() else -1

    # ---- pins and SPI ------------------------------------------------------------
    def pin_write(self, pin: int, value: int) -> None:
        old = self.pins.get(pin, 1)
        self.pins[pin] = value
        if pin == 8 and old == 1 and value == 0:  # LDAC falling edge
            self._segment()
            self.dac_out[:, :] = self.dac_in
            self._check()

    def _selected(self, pins: tuple[int, ...]) -> int:
        low = [i for i, p in enumerate(pins) if self.pins.get(p, 1) == 0]
        assert len(low) <= 1, f"two chip selects low at once: {low}"
        return low[0] if low else -1

    def spi(self, bus: int, tx: bytes) -> bytes:
        self.clock_us += len(tx) * 8 / (30.0 if bus == 0 else 17.0)
        if bus == 0:
            sel = self._selected((5, 6, 7))
            if sel >= 0:
                self._dac(sel, tx)
            elif self.pins.get(9, 1) == 0:
                self._switch(tx)
            return bytes(len(tx))
        sel = self._selected((13, 14))
        return self._adc(sel, tx) if sel >= 0 else bytes(len(tx))

    def _dac(self, sel: int, tx: bytes) -> None:
        """The last word on the wire lands in the chip nearest the MCU (position 0)."""
        chain = self.geom.dac_chain
        words = len(tx) // 3
        assert len(tx) % 3 == 0 and 1 <= words <= chain, f"DAC frame of {len(tx)} bytes"
        cmds = {tx[3 * k] >> 4 for k in range(words)}
        if cmds <= {0x0, 0x1, 0x8}:  # input registers only: no output moves yet
            for k in range(words):
                chip = sel * chain + (words - 1 - k)
                if tx[3 * k] >> 4 == 0x1 and chip < self.geom.dac_chips:
                    self.dac_in[chip, tx[3 * k] & 15] = (tx[3 * k + 1] << 8) | tx[3 * k + 2]
            return
        self._segment()
        for k in range(words):
            chip = sel * chain + (words - 1 - k)
            cmd, ch = tx[3 * k] >> 4, tx[3 * k] & 15
            code = (tx[3 * k + 1] << 8) | tx[3 * k + 2]
            if chip >= self.geom.dac_chips:
                continue
            if cmd == 0x1:
                self.dac_in[chip, ch] = code
            elif cmd == 0x3:
                self.dac_in[chip, ch] = self.dac_out[chip, ch] = code
            elif cmd == 0x6:
                self.dac_in[chip, :] = self.dac_out[chip, :] = 0
            elif cmd == 0xB:  # every channel's input and DAC register
                self.dac_in[chip, :] = self.dac_out[chip, :] = code
        self._check()

    def _switch(self, tx: bytes) -> None:
        n = len(self.sw)
        assert len(tx) == n, f"switch frame of {len(tx)} bytes, chain {n}"
        self._segment()
        for k in range(n):
            self.sw[n - 1 - k] = tx[k]
        m = self.modes()
        self.shorts += int((m[:, 0] & m[:, 2]).sum())
        self._check()

    def _adc(self, sel: int, tx: bytes) -> bytes:
        """Shared command for the chain; chip p's previous result in bytes 2+2p, 3+2p."""
        chain = self.geom.adc_chain
        assert len(tx) == 2 + 2 * chain, f"ADC frame of {len(tx)} bytes, chain {chain}"
        rx = bytearray(len(tx))
        cmd = (tx[0] << 8) | tx[1]
        for p in range(chain):
            chip = sel * chain + p
            if chip >= self.geom.adc_chips:
                continue
            r = int(self.adc_result[chip])
            rx[2 + 2 * p], rx[3 + 2 * p] = r >> 8, r & 0xFF
            if cmd & 0xE3FF == 0xC000:
                self.adc_ch[chip] = (cmd >> 10) & 7
            elif cmd != 0:
                continue  # reset, register writes
            self.adc_result[chip] = self._convert(chip * 8 + int(self.adc_ch[chip]))
        return bytes(rx)

    def _convert(self, gcol: int) -> int:
        geom = self.geom
        if gcol >= geom.columns:
            return 32768
        a, c = divmod(gcol, geom.cols)
        if not self.modes()[geom.col_line(a, c), 1]:
            return 32768
        base = geom.row_line(a, 0)
        current = float(self.volts()[base : base + geom.rows] @ self.g[a, :, c])
        rf = RF[self.pins.get(17, 0) * 2 + self.pins.get(16, 0)]
        vout = max(-10.0, min(10.0, -current * rf))
        return max(0, min(65535, round(32768 + vout / ADC_LSB)))

    # ---- physics and safety ------------------------------------------------------
    def _segment(self) -> None:
        """Apply the cell voltages held since the last change for the elapsed time."""
        dt = self.clock_us - self.t_seg
        self.t_seg = self.clock_us
        if dt <= 0:
            return
        geom = self.geom
        v = self.volts()
        if np.abs(v).max(initial=0.0) * 2 <= self.V_TH:
            return
        span = self.G_MAX - self.G_MIN
        for a in range(geom.arrays):
            base = geom.row_line(a, 0)
            cell = (
                v[base : base + geom.rows, None] - v[base + geom.rows : base + geom.lines_per_array]
            )
            over = np.abs(cell) > self.V_TH
            if geom.cell == "1T1R":  # a floating row keeps its access transistors off
                over &= self.modes()[base : base + geom.rows].any(axis=1)[:, None]
            if over.any():
                step = np.sign(cell) * self.RATE * (np.abs(cell) - self.V_TH) * dt * span
                self.g[a] = np.where(
                    over, np.clip(self.g[a] + step, self.G_MIN, self.G_MAX), self.g[a]
                )

    def _check(self) -> None:
        m = self.modes()
        v = np.abs(self.volts())[m[:, 0]]
        if v.size:
            self.max_line_v = max(self.max_line_v, float(v.max()))
            if m[:, 1].any():
                self.max_read_v = max(self.max_read_v, float(v.max()))

    def idle_safe(self) -> bool:
        """True when every line is grounded and every DAC output is 0 V."""
        m = self.modes()
        lines_ok = bool(m[:, 2].all() and not m[:, :2].any())
        return lines_ok and bool((self.dac_out.reshape(-1)[: self.geom.lines] == 32768).all())


def _fake_modules(sim: FirmwareSim) -> dict[str, types.ModuleType]:
    machine = types.ModuleType("machine")

    class Pin:
        OUT = 1
        IN = 0

        def __init__(self, pin: int, mode: int = -1, value: int | None = None) -> None:
            self.id = pin
            if value is not None:
                self.value(value)

        def value(self, v: int | None = None) -> int | None:
            if v is None:
                return sim.board.pins.get(self.id, 0)
            sim.board.pin_write(self.id, 1 if v else 0)
            return None

        def on(self) -> None:
            self.value(1)

        def off(self) -> None:
            self.value(0)

    class SPI:
        def __init__(
            self,
            bus: int,
            baudrate: int = 0,
            polarity: int = 0,
            phase: int = 0,
            sck: Any = None,
            mosi: Any = None,
            miso: Any = None,
        ) -> None:
            assert (polarity, phase) == (0, 1), "parts expect SPI mode 1"
            self.bus = bus

        def write(self, buf: Any) -> None:
            sim.board.spi(self.bus, bytes(buf))

        def write_readinto(self, tx: Any, rx: Any) -> None:
            rx[:] = sim.board.spi(self.bus, bytes(tx))

    class WDT:
        def __init__(self, timeout: int = 5000) -> None:
            sim.wdt_timeout = timeout

        def feed(self) -> None:
            sim.board.wdt_fed += 1

    machine.__dict__.update(Pin=Pin, SPI=SPI, WDT=WDT, freq=lambda: 125_000_000)

    time = types.ModuleType("time")
    mask = (1 << 30) - 1

    def ticks_us() -> int:
        sim.board.clock_us += 1.0
        return int(sim.board.clock_us) & mask

    def sleep_us(us: int) -> None:
        if us > 0:
            sim.board.clock_us += us

    time.__dict__.update(
        ticks_us=ticks_us,
        ticks_ms=lambda: int(sim.board.clock_us / 1000) & mask,
        ticks_diff=lambda a, b: ((a - b + (1 << 29)) & mask) - (1 << 29),
        sleep_us=sleep_us,
        sleep_ms=lambda ms: sleep_us(1000 * ms),
    )
    mp = types.ModuleType("micropython")
    mp.__dict__.update(
        const=lambda x: x,
        kbd_intr=lambda c: sim.kbd.append(c),
        viper=lambda f: f,  # firmware/kernels.py runs as the Python it is
        native=lambda f: f,
    )
    gc = types.ModuleType("gc")
    gc.__dict__.update(mem_free=lambda: 150_000, collect=lambda: None)
    return {"machine": machine, "time": time, "micropython": mp, "gc": gc}


class FirmwareSim:
    """The firmware's modules in a private namespace over a `SimBoard`."""

    def __init__(
        self, profile: str = "xbar-10x10", g: np.ndarray | None = None, seed: int = 0
    ) -> None:
        self.kbd: list[int] = []
        self.wdt_timeout = 0
        self.modules: dict[str, types.ModuleType] = _fake_modules(self)
        self._builtins = {**builtins.__dict__, **VIPER_BUILTINS}
        self._builtins["__import__"] = self._import
        self.board = SimBoard(self.load("profiles").Geometry(profile), g, seed)
        self.out = bytearray()
        writer = types.SimpleNamespace(write=self._write)
        self.app = self.load("app").App(writer, profile)

    def _write(self, data: Any) -> int:
        self.out += bytes(data)
        return len(data)

    def _import(
        self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level == 0 and (name in self.modules or (FIRMWARE / f"{name}.py").is_file()):
            return self.load(name)
        return builtins.__import__(name, globals, locals, fromlist, level)

    def load(self, name: str) -> Any:
        if name not in self.modules:
            mod = types.ModuleType(name)
            mod.__dict__["__builtins__"] = self._builtins
            self.modules[name] = mod
            path = FIRMWARE / f"{name}.py"
            exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
        return self.modules[name]

    def feed(self, data: bytes) -> bytes:
        """Run the firmware's own command loop over these bytes; returns its output."""
        self.app.loop(_Bytes(data))
        out = bytes(self.out)
        self.out.clear()
        return out


class _Bytes:
    """A reader for `app.loop`: the given bytes, then end of stream (readinto -> 0)."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def any(self) -> int:
        return len(self.data)

    def readinto(self, buf: Any, size: int | None = None) -> int:
        n = min(len(buf) if size is None else size, len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


class SimTransport:
    """A serial-port-like object for `xbar.host.board.Board` over a `FirmwareSim`."""

    def __init__(self, sim: FirmwareSim, tap: Callable[[bytes], bytes] | None = None) -> None:
        self.sim = sim
        self.rx = bytearray()
        self.timeout: float | None = 1.0
        self.tap = tap

    def write(self, data: bytes) -> int:
        if self.tap is not None:
            data = self.tap(bytes(data))
        self.rx += self.sim.feed(bytes(data))
        return len(data)

    def read(self, n: int = 1) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def reset_input_buffer(self) -> None:
        self.rx.clear()

    def close(self) -> None:
        pass


# ---- checks of the stand-in itself -------------------------------------------------
def test_sim_boots_to_safe_state() -> None:
    sim = FirmwareSim()
    assert sim.board.idle_safe()
    assert sim.board.shorts == 0


def test_sim_decodes_dac_word() -> None:
    sim = FirmwareSim()
    b = sim.board
    b.pins[5] = 0
    b.spi(0, bytes([0x32, 0x80, 0x01]))  # write+update chip 0 channel 2 to 0x8001
    b.pins[5] = 1
    assert int(b.dac_out[0, 2]) == 0x8001
