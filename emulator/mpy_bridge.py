"""Emulator side of the bridge that carries a MicroPython interpreter's machine calls to
the board model (`emulator/mpy/_emu_hw.py` is the other side).

The wire format is defined once, in `emulator/mpy/_emu_wire.py`, which both interpreters
read. The server runs in a thread per interpreter: it decodes each request, calls the
same `Hardware` method the in-process runtime calls, and answers the synchronous ones.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from xbar.emulator.emulated_board import WIRE
from xbar.emulator.hardware import BoardHalted, BoardReset, Hardware

_HEADER = struct.Struct(WIRE.HEADER)


class _Op:
    """One decoded entry of the wire table."""

    def __init__(self, name: str, request: str, response: str | None, sync: bool) -> None:
        self.name = name
        self.request = struct.Struct(request)
        self.response = None if response in (None, "raw") else struct.Struct(response)
        self.sync = sync


OPS = {
    code: _Op(name, req, resp, code in WIRE.SYNC) for code, (name, req, resp) in WIRE.OPS.items()
}


class ComputeMeter:
    """Charges the interpreter's own computation to the board, from its CPU time.

    The unix port has no bytecode counter, so the firmware's Python work between two
    bridge calls is measured as the interpreter process's CPU time on the host
    (`/proc/PID/schedstat`, nanoseconds; time blocked on the link or the bridge does
    not count) and converted to bytecodes with a calibration the interpreter runs at
    boot (`_emu_hw.calibrate_compute`): host nanoseconds per bytecode from a loop of
    known size, minus the measured cost of the bridge calls themselves. Each bytecode
    is charged the cost table's "bytecode", as the in-process runtime charges each one
    it counts. Unlike that count, this depends on the host's speed and load: virtual
    time in this runtime is reproducible only to within that jitter.
    """

    SAMPLES = 64

    def __init__(self, pid: int) -> None:
        self._path = f"/proc/{pid}/schedstat"
        self.ns_per_op: float | None = None
        self.sync_overhead_ns = 0.0
        self.post_overhead_ns = 0.0
        self.calibrated = False
        self._last = self._read()
        self._posts = 0
        self._samples: list[float] = []
        self._carry = 0.0

    def _read(self) -> int:
        try:
            with open(self._path, "rb") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def _delta(self) -> float:
        now = self._read()
        delta, self._last = float(now - self._last), now
        return delta

    def posted(self) -> None:
        self._posts += 1

    def calibrate(self, step: int) -> None:
        delta = self._delta()
        if step == 0:
            self._posts = 0
        elif step > 0:
            self.ns_per_op = max(delta, 1.0) / step
        elif step == -1:
            self._samples.append(delta)
        elif step == -2:  # after SAMPLES posted no-ops
            self._samples.sort()
            self.sync_overhead_ns = self._samples[len(self._samples) // 2] if self._samples else 0
            self.post_overhead_ns = max(delta - self.sync_overhead_ns, 0.0) / max(self._posts, 1)
            self._posts = 0
        elif step == -3:
            self.calibrated = self.ns_per_op is not None

    def synced(self) -> int:
        """Bytecodes the interpreter ran since the previous synchronous call."""
        delta = self._delta()
        posts, self._posts = self._posts, 0
        if not self.calibrated or self.ns_per_op is None:
            return 0
        work = delta - self.sync_overhead_ns - posts * self.post_overhead_ns
        ops = max(work, 0.0) / self.ns_per_op + self._carry
        whole = int(ops)
        self._carry = ops - whole
        return whole


class BridgeServer:
    """Serves one interpreter's bridge until its pipe closes or the board resets.

    `on_reset(cause)` is called (from this thread) when the firmware asked for a hard
    reset or the watchdog bit; the caller restarts the interpreter. `busy` and
    `last_active` let the supervisor decide when a Ctrl-C can be sent as a signal
    without landing in the middle of a bridge exchange.
    """

    def __init__(
        self,
        hw: Hardware,
        rfd: int,
        wfd: int,
        on_reset: Callable[[int], None],
        meter: ComputeMeter | None = None,
    ) -> None:
        self.hw = hw
        self.meter = meter
        self._rfile = os.fdopen(rfd, "rb", buffering=1 << 16)
        self._wfd = wfd
        self.on_reset = on_reset
        self.busy = False
        self.last_active = time.monotonic()
        self.requests = 0
        self.async_errors = 0
        self.thread = threading.Thread(target=self._serve, name="emu-bridge", daemon=True)

    def start(self) -> BridgeServer:
        self.thread.start()
        return self

    def _reply(self, status: int, payload: bytes = b"") -> None:
        data = _HEADER.pack(status, len(payload)) + payload
        while data:
            data = data[os.write(self._wfd, data) :]

    def _serve(self) -> None:
        try:
            while self._handle_one():
                pass
        except OSError:
            pass  # the interpreter went away mid-message
        finally:
            for close in (self._rfile.close, lambda: os.close(self._wfd)):
                with contextlib.suppress(OSError):
                    close()

    def _handle_one(self) -> bool:
        head = self._rfile.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return False
        self.busy = True
        try:
            code, length = _HEADER.unpack(head)
            payload = self._rfile.read(length) if length else b""
            self.requests += 1
            op = OPS.get(code)
            if op is None:
                self._reply(WIRE.E_OS, f"unknown bridge op 0x{code:02x}".encode())
                return True
            try:
                args: tuple[Any, ...] = op.request.unpack_from(payload)
            except struct.error:
                if op.sync:
                    self._reply(WIRE.E_VALUE, f"bad {op.name} request".encode())
                return True
            if op.name == "spi":
                args = (*args, payload[op.request.size :])
            if op.name == "work":  # counted firmware (work_count.py): charged at the next call
                hw = self.hw
                with hw.lock:
                    hw.pending_bytecodes += args[0]
                    hw.pending_viper += args[1]
                    hw.pending_native += args[2]
                return True
            if self.meter is not None:
                if op.name in ("calibrate", "nop"):
                    if op.name == "calibrate":
                        self.meter.calibrate(*args)
                        self._reply(WIRE.OK)
                    else:
                        self.meter.posted()
                    return True
                if op.sync:
                    self.hw.pending_bytecodes += self.meter.synced()
                else:
                    self.meter.posted()
            elif op.name in ("calibrate", "nop"):
                if op.sync:
                    self._reply(WIRE.OK)
                return True
            return self._dispatch(op, args)
        finally:
            self.busy = False
            self.last_active = time.monotonic()

    def _dispatch(self, op: _Op, args: tuple[Any, ...]) -> bool:
        # A posted op must not swallow a pending Ctrl-C (it has no reply to carry it).
        pending = False
        if not op.sync:
            pending, self.hw._interrupt = self.hw._interrupt, False
        status, payload = WIRE.OK, b""
        try:
            result = getattr(self.hw, op.name)(*args)
            if op.sync and result is not None:
                payload = op.response.pack(result) if op.response else bytes(result)
        except KeyboardInterrupt:
            status = WIRE.E_INTERRUPT
        except BoardReset as exc:
            self.on_reset(exc.cause)
            return False
        except BoardHalted:
            return False
        except ValueError as exc:
            status, payload = WIRE.E_VALUE, str(exc).encode()
        except Exception as exc:  # a model error must not take the emulator down
            status, payload = WIRE.E_OS, f"{type(exc).__name__}: {exc}".encode()
        if pending:
            self.hw.interrupt()
        if op.sync:
            self._reply(status, payload)
        elif status != WIRE.OK:
            self.async_errors += 1
            if status == WIRE.E_INTERRUPT:
                self.hw.interrupt()
        return True
