"""`Board`: the host's client for an xbar board, real or emulated, and the crossbar model
it loads.

A board is opened from a port string: a serial device (`/dev/ttyACM0`), a pty path, or
any pyserial URL such as `emu://xbar-10x10?seed=1` (the emulator's handler), or from an
already open serial-like object. Every method is one or a few protocol requests
(docs/architecture.md, serial frame format and command payloads) with typed results;
refusals raise `FirmwareError` with the firmware's error code and reason.

The crossbar plan it loads (`CrossbarModel`, `plan_tiles`) lives in `xbar.training.plan` and
is re-exported here.
"""

from __future__ import annotations

import importlib
import secrets
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xbar.firmware import protocol as P
from xbar.host.protocol_client import (
    BoardError,
    FirmwareError,
    Link,
    LinkError,
    LostError,
    NotXbarError,
    SerialLike,
    VersionError,
)
from xbar.training.plan import DAC_LSB, CrossbarModel, PlanError, Tile, TileLayer, plan_tiles

__all__ = [
    "DAC_LSB",
    "Board",
    "BoardError",
    "CrossbarModel",
    "FirmwareError",
    "Hello",
    "Info",
    "LinkError",
    "LoadResult",
    "NotXbarError",
    "PlanError",
    "PortBusyError",
    "PortError",
    "ProgramResult",
    "PulseResult",
    "Safety",
    "StreamResult",
    "Tile",
    "TileLayer",
    "VersionError",
    "plan_tiles",
]

# USB vendor ids under which the board's MCU itself is the USB device (MicroPython on the
# RP2040: Raspberry Pi's 0x2E8A; MicroPython's own 0xF055): its USB serial number is then
# the chip's unique id. Behind a USB-serial bridge (FTDI, CP210x, CH340) the serial number
# is the cable's, which says nothing about the board on its far end.
MCU_USB_VIDS = frozenset({0x2E8A, 0xF055})

CELL_BYTES = struct.calcsize(P.PROGRAM_CELL)
MAX_PROGRAM_CELLS = (P.MAX_PAYLOAD - struct.calcsize(P.PROGRAM_REQ)) // CELL_BYTES


# ---- results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello:
    protocol: int
    firmware: tuple[int, int, int]
    max_payload: int
    profile: str


@dataclass(frozen=True)
class Info:
    arrays: int
    rows: int
    cols: int
    gains: int
    dac_lsb: float
    adc_lsb: float
    free_heap: int
    model_capacity: int
    max_layers: int
    max_tiles: int
    max_width: int
    stream_window: int
    limits: tuple[float, float, int, float]  # v_read_max, v_line_max, width_max_us, i_comp
    profile: str


@dataclass(frozen=True)
class Safety:
    """Limits in force and the firmware's hard maxima (same fields)."""

    v_read_max: float
    v_line_max: float
    width_max_us: int
    i_compliance: float
    hard: tuple[float, float, int, float]


@dataclass(frozen=True)
class PulseResult:
    amplitude: float  # V across the cell, after DAC quantisation
    width_us: int  # as timed by the MCU
    g_before: float  # S, the compliance check's read


@dataclass
class ProgramResult:
    """Write-verify outcome per cell, in request order."""

    cells: list[tuple[int, int]]
    targets: np.ndarray
    achieved: np.ndarray
    pulses: np.ndarray
    status: np.ndarray  # protocol ST_* per cell

    @property
    def error(self) -> np.ndarray:
        return self.achieved - self.targets

    @property
    def converged(self) -> np.ndarray:
        return self.status == P.ST_OK


@dataclass(frozen=True)
class LoadResult:
    layers: int
    tiles: int
    n_in: int
    n_out: int
    program: ProgramResult | None


@dataclass
class StreamResult:
    """Outputs of a streamed batch and what the link did for it."""

    outputs: np.ndarray  # (n, n_out) int
    latencies: np.ndarray  # s, per frame: request written -> answer decoded
    frame_sizes: np.ndarray  # inputs per frame
    payload_bytes: int  # input bytes carried (n * n_in)
    wire_bytes_out: int  # every byte written, framing included
    wire_bytes_in: int  # every byte of the answers, framing included
    wall_s: float
    retried: int  # frames sent again after a CRC error or a lost answer


class PortError(BoardError):
    """The port cannot be opened: missing, no permission, busy, or a bad URL."""


class PortBusyError(PortError):
    """Another process holds the port (ports are opened exclusively: one owner each)."""


# ---- the client ------------------------------------------------------------------------
def _open(port: str | SerialLike, baudrate: int = 115200) -> SerialLike:
    if not isinstance(port, str):
        return port
    import errno

    import serial

    if port.startswith("emu://"):
        # Importing the emulator registers its emu:// handler with pyserial; imported
        # here only, so talking to real boards never loads it.
        importlib.import_module("xbar.emulator")
    try:
        # exclusive: on POSIX pyserial takes a non-blocking flock on the device (a pty
        # and the emu:// handler's pty included), so a second process, xbar or any tool
        # that locks (mpremote does), is refused instead of stealing the answers.
        dev: SerialLike = serial.serial_for_url(
            port, baudrate=baudrate, timeout=0.05, exclusive=True
        )
    except (serial.SerialException, ValueError, OSError) as exc:
        code = getattr(exc, "errno", None)
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            raise PortBusyError(
                f"{port} is busy: another program (another xbar command, mpremote?) "
                "has it open; close it first, one program per port"
            ) from None
        if code == errno.ENOENT:
            raise PortError(
                f"no such port {port}: check the cable and the name "
                "(`python -m serial.tools.list_ports` lists ports)"
            ) from None
        if code in (errno.EACCES, errno.EPERM):
            raise PortError(
                f"permission denied on {port}: add your user to the port's "
                "group (e.g. `sudo usermod -aG dialout $USER`, then log in "
                "again)"
            ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PortError(f"cannot open {port}: {reason}") from None
    return dev


def _say_on_stderr(line: str) -> None:
    """What a board busy with an earlier client's command makes `Board` say while it
    waits (one line; a wait of minutes with no word looks like a hang)."""
    print(f"xbar: {line}", file=sys.stderr, flush=True)


class Board:
    """One board on one port. `with Board("emu://xbar-10x10?seed=1") as b: b.hello()`."""

    def __init__(
        self,
        port: str | SerialLike,
        timeout: float = 10.0,
        *,
        baudrate: int = 115200,
        retries: int = 3,
        on_busy: Callable[[str], None] | None = _say_on_stderr,
    ) -> None:
        self.port_name = port if isinstance(port, str) else type(port).__name__
        self.link = Link(_open(port, baudrate), timeout, retries)
        # On a port other clients may have used (a device, a pty) sequence numbers start
        # anywhere: answers a killed or earlier client left owed (its requests, its
        # probes) then almost never carry a number this one waits for. An emu:// board is
        # this process's own, and a port passed in keeps its caller's numbering, so runs
        # on them stay reproducible to the cycle.
        if isinstance(port, str) and not port.startswith("emu://"):
            self.link.seq = secrets.randbelow(0x10000)
        self._owned = isinstance(port, str)  # a port passed in stays the caller's
        self.link.on_busy = on_busy
        try:
            self.link.flush()
            self.link.sync(timeout)
        except BaseException as exc:
            if self._owned:
                self.link.close()
            if isinstance(exc, LinkError) and isinstance(port, str):
                exc.args = (str(exc).replace("PORT", port),)
            raise
        self._info: Info | None = None
        self._identity: str | None = None
        self._shape: tuple[int, int] | None = None  # (n_in, n_out) of the loaded model

    @classmethod
    def open(cls, port: str | SerialLike, timeout: float = 10.0, **kwargs: Any) -> Board:
        """A board on a device path, a pty path or an `emu://` URL (or an open port)."""
        return cls(port, timeout, **kwargs)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the board idle and safe, then release the port.

        The firmware grounds every line after each command; what the host must not
        leave behind is a torn frame (ended here with a 0x00) or answers still owed
        (taken and dropped, so the board is not blocked writing to a closed port)."""
        try:
            if self.link.outstanding:
                self.link.port.write(b"\x00")
                self.link.drain(timeout=min(2.0, self.link.timeout))
        except (BoardError, OSError):
            pass
        finally:
            if self._owned:
                self.link.close()

    def request(self, code: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        return self.link.request(code, payload, timeout)

    # ---- identity and limits ---------------------------------------------------------
    def hello(self) -> Hello:
        p = self.request(P.HELLO)
        n = struct.calcsize(P.HELLO_RESP)
        ver, a, b, c, maxp = struct.unpack_from(P.HELLO_RESP, p, 0)
        return Hello(ver, (a, b, c), maxp, bytes(p[n:]).decode())

    def identity(self) -> str | None:
        """What tells this board from another across runs and ports: `mcu:HEX`, the MCU's
        unique id from the firmware (IDENT: `machine.unique_id()`, the RP2040's flash id;
        an emulated board gets a new one each time it is made, like its fresh cells), or
        None for firmware that predates IDENT."""
        if self._identity is None:
            try:
                uid = self.request(P.IDENT)
            except FirmwareError as exc:
                if exc.code != P.E_UNKNOWN:
                    raise
                return None
            self._identity = f"mcu:{bytes(uid).hex()}"
        return self._identity

    def info(self) -> Info:
        p = self.request(P.INFO)
        n = struct.calcsize(P.INFO_RESP)
        f = struct.unpack_from(P.INFO_RESP, p, 0)
        self._info = Info(
            int(f[0]),
            int(f[1]),
            int(f[2]),
            int(f[3]),
            float(f[4]),
            float(f[5]),
            int(f[6]),
            int(f[7]),
            int(f[8]),
            int(f[9]),
            int(f[10]),
            int(f[11]),
            (float(f[12]), float(f[13]), int(f[14]), float(f[15])),
            bytes(p[n:]).decode(),
        )
        return self._info

    @property
    def geometry(self) -> Info:
        return self._info if self._info is not None else self.info()

    def safety(
        self,
        v_read_max: float | None = None,
        v_line_max: float | None = None,
        width_max_us: int | None = None,
        i_compliance: float | None = None,
    ) -> Safety:
        """Get the limits, or set those given (the firmware clamps to its hard maxima)."""
        values = (v_read_max, v_line_max, width_max_us, i_compliance)
        if all(v is None for v in values):
            p = self.request(P.SAFETY, struct.pack(P.SAFETY_REQ, 0, 0, 0, 0, 0))
        else:
            cur = self.safety()
            now = (cur.v_read_max, cur.v_line_max, cur.width_max_us, cur.i_compliance)
            new = [now[i] if v is None else v for i, v in enumerate(values)]
            p = self.request(
                P.SAFETY,
                struct.pack(
                    P.SAFETY_REQ, 1, float(new[0]), float(new[1]), int(new[2]), float(new[3])
                ),
            )
        n = struct.calcsize(P.SAFETY_LIMITS)
        lim = struct.unpack_from(P.SAFETY_LIMITS, p, 0)
        hard = struct.unpack_from(P.SAFETY_LIMITS, p, n)
        return Safety(lim[0], lim[1], lim[2], lim[3], hard)

    # ---- cells -------------------------------------------------------------------------
    def read(
        self, row: int | None = None, col: int | None = None, *, array: int = 0, v_read: float = 0.1
    ) -> Any:
        """Conductance (S): one cell (row, col) as a float, a row (col None) as a vector,
        or the whole array (row and col None) as a rows x cols matrix."""
        if row is None:
            info = self.geometry
            if info.rows * info.cols * 4 + 5 <= P.MAX_PAYLOAD:
                return self._read(P.READ_ARRAY, array, 0, 0, v_read).reshape(info.rows, info.cols)
            return np.stack([self._read(P.READ_ROW, array, r, 0, v_read) for r in range(info.rows)])
        if col is None:
            return self._read(P.READ_ROW, array, row, 0, v_read)
        return float(self._read(P.READ_CELL, array, row, col, v_read)[0])

    def _read(self, mode: int, array: int, row: int, col: int, v_read: float) -> np.ndarray:
        p = self.request(P.READ, struct.pack(P.READ_REQ, array, mode, row, col, v_read))
        n = struct.calcsize(P.READ_RESP)
        _, count, _sat = struct.unpack_from(P.READ_RESP, p, 0)
        return np.frombuffer(bytes(p[n : n + 4 * count]), dtype="<f4").astype(float)

    def pulse(
        self,
        row: int,
        col: int,
        amplitude: float,
        width_us: int,
        *,
        polarity: str = "set",
        array: int = 0,
    ) -> PulseResult:
        """One write pulse of `amplitude` volts (> 0) across a cell; polarity set/reset."""
        if polarity not in ("set", "reset"):
            raise ValueError(f"polarity {polarity!r}: use 'set' or 'reset'")
        pol = P.SET if polarity == "set" else P.RESET_POLARITY
        p = self.request(
            P.PULSE, struct.pack(P.PULSE_REQ, array, pol, row, col, float(amplitude), int(width_us))
        )
        return PulseResult(*struct.unpack_from(P.PULSE_RESP, p, 0))

    def program(
        self,
        targets: dict[tuple[int, int], float] | np.ndarray,
        *,
        tolerance: float,
        array: int = 0,
        max_pulses: int = 100,
        v_read: float = 0.1,
        v_set: float = 2.0,
        v_reset: float = 2.0,
        v_step: float = 0.25,
        width_us: int = 100,
        max_width_us: int = 10_000,
        timeout: float | None = None,
    ) -> ProgramResult:
        """Write-verify cells to target conductances (S) within `tolerance` (S).

        `targets` maps (row, col) to S, or is a rows x cols matrix (NaN: leave alone).
        Sent in frames of up to MAX_PROGRAM_CELLS cells."""
        if isinstance(targets, np.ndarray):
            items = [
                ((int(r), int(c)), float(targets[r, c]))
                for r, c in zip(*np.nonzero(~np.isnan(targets)), strict=True)
            ]
        else:
            items = [((int(r), int(c)), float(g)) for (r, c), g in targets.items()]
        cells = [rc for rc, _ in items]
        want = np.array([g for _, g in items])
        got = np.zeros(len(items))
        used = np.zeros(len(items), dtype=np.int64)
        status = np.zeros(len(items), dtype=np.int64)
        rsz = struct.calcsize(P.PROGRAM_RESULT)
        for s in range(0, len(items), MAX_PROGRAM_CELLS):
            part = items[s : s + MAX_PROGRAM_CELLS]
            body = bytearray(
                struct.pack(
                    P.PROGRAM_REQ,
                    array,
                    0,
                    len(part),
                    max_pulses,
                    tolerance,
                    v_read,
                    v_set,
                    v_reset,
                    v_step,
                    width_us,
                    max_width_us,
                )
            )
            for (r, c), g in part:
                body += struct.pack(P.PROGRAM_CELL, r, c, g)
            wait = timeout if timeout is not None else 30.0 + 0.05 * len(part) * max_pulses
            p = self.request(P.PROGRAM, bytes(body), timeout=wait)
            (n,) = struct.unpack_from(P.PROGRAM_RESP, p, 0)
            if n != len(part):
                raise LinkError(f"PROGRAM answered {n} cells for {len(part)}")
            for i in range(n):
                g, u, st = struct.unpack_from(P.PROGRAM_RESULT, p, 2 + i * rsz)
                got[s + i], used[s + i], status[s + i] = g, u, st
        return ProgramResult(cells, want, got, used, status)

    # ---- models ----------------------------------------------------------------------
    def load(
        self,
        model: CrossbarModel,
        *,
        program: bool = True,
        tolerance: float | None = None,
        **program_args: Any,
    ) -> LoadResult:
        """Program the model's conductances (unless program=False) and LOAD its blob.

        The default tolerance is half a weight step (0.5 g_unit): within it every cell
        still rounds to its int8 weight. `program_args` go to `program()`."""
        result = None
        if program:
            merged: ProgramResult | None = None
            for array, cells in sorted(model.targets().items()):
                tol = tolerance if tolerance is not None else 0.5 * model.layers[0].g_unit
                r = self.program(cells, tolerance=tol, array=array, **program_args)
                if merged is None:
                    merged = r
                else:
                    merged = ProgramResult(
                        merged.cells + r.cells,
                        np.concatenate([merged.targets, r.targets]),
                        np.concatenate([merged.achieved, r.achieved]),
                        np.concatenate([merged.pulses, r.pulses]),
                        np.concatenate([merged.status, r.status]),
                    )
            result = merged
        blob = model.to_blob()
        self.request(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(blob), P.crc32(blob)))
        step = P.MAX_PAYLOAD - struct.calcsize(P.LOAD_CHUNK_REQ)
        for off in range(0, len(blob), step):
            self.request(P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, off) + blob[off : off + step])
        p = self.request(P.LOAD_END)
        nl, nt, n_in, n_out = struct.unpack_from(P.LOAD_END_RESP, p, 0)
        self._shape = (n_in, n_out)
        return LoadResult(nl, nt, n_in, n_out, result)

    def infer(self, x: Iterable[int], *, accumulators: bool = False) -> Any:
        """Outputs (int array) for one uint8 input; with accumulators=True also the last
        layer's int32 accumulators: (outputs, accumulators)."""
        data = _u8(x)
        flags = P.INFER_WANT_ACC if accumulators else 0
        p = self.request(P.INFER, struct.pack(P.INFER_REQ, flags, len(data)) + data)
        (n,) = struct.unpack_from(P.INFER_RESP, p, 0)
        y = np.frombuffer(bytes(p[2 : 2 + 2 * n]), dtype="<i2").astype(np.int64)
        if not accumulators:
            return y
        acc = np.frombuffer(bytes(p[2 + 2 * n : 2 + 6 * n]), dtype="<i4").astype(np.int64)
        return y, acc

    def infer_stream(
        self,
        xs: Sequence[Iterable[int]],
        *,
        per_frame: int | None = None,
        window: int | None = None,
    ) -> np.ndarray:
        """Outputs for a batch, keeping up to `window` requests in flight (credit-based:
        each response returns one credit). Rows of the result follow the input order."""
        return self.stream(xs, per_frame=per_frame, window=window).outputs

    def stream(
        self,
        xs: Sequence[Iterable[int]] | np.ndarray,
        *,
        per_frame: int | None = None,
        window: int | None = None,
        progress: Any = None,
    ) -> StreamResult:
        """Stream a batch with up to `window` INFER_STREAM frames in flight; the outputs
        and the link's figures (latency per frame, bytes, retries). A frame whose answer
        is lost or fails its CRC is sent again (inference is repeatable). `progress`
        (e.g. a tqdm bar) is updated with the number of inputs answered."""
        rows = [_u8(x) for x in xs]
        if not rows:
            raise ValueError("nothing to stream: no inputs")
        n_in = len(rows[0])
        if any(len(r) != n_in for r in rows):
            raise ValueError("every input of a stream must have the same length")
        info = self.geometry
        win = max(1, window if window is not None else info.stream_window)
        hdr = struct.calcsize(P.STREAM_REQ)
        n_out = self._shape[1] if self._shape is not None else P.MAX_PAYLOAD // 2
        fit = min(
            (P.MAX_PAYLOAD - hdr) // n_in,
            (P.MAX_PAYLOAD - struct.calcsize(P.STREAM_RESP)) // (2 * n_out),
        )
        per = per_frame or max(1, min(255, fit))
        chunks = [(i, rows[i : i + per]) for i in range(0, len(rows), per)]
        batch = self.link.next_seq()
        results: dict[int, np.ndarray] = {}
        flight: list[tuple[int, int, int, float, bytes]] = []  # seq, first, count, t, body
        pending = list(chunks)
        latencies: list[float] = []
        sizes: list[int] = []
        retried = 0
        out0, in0 = self.link.bytes_out, self.link.bytes_in
        rs = struct.calcsize(P.STREAM_RESP)
        t0 = time.perf_counter()

        def send(body: bytes) -> tuple[int, float]:
            return self.link.send(P.INFER_STREAM, body), time.perf_counter()

        while pending or flight:
            while pending and len(flight) < win:
                first, part = pending.pop(0)
                body = struct.pack(P.STREAM_REQ, batch, first, len(part)) + b"".join(part)
                seq, t = send(body)
                flight.append((seq, first, len(part), t, body))
            seq, first, count, t, body = flight.pop(0)
            for attempt in range(self.link.retries + 1):
                try:
                    p = self.link.receive(P.INFER_STREAM, seq)
                    break
                except (LostError, FirmwareError) as exc:
                    crc = isinstance(exc, FirmwareError) and exc.code == P.E_CRC
                    if not (crc or isinstance(exc, LostError)) or attempt == self.link.retries:
                        raise LinkError(
                            f"stream stopped at inputs {first}..{first + count - 1}"
                            f" ({len(results) * per} of {len(rows)} answered): "
                            f"{exc}"
                        ) from exc
                    self.link.forget(seq)
                    retried += 1
                    seq, t = send(body)
            latencies.append(time.perf_counter() - t)
            b, f, c, _credit = struct.unpack_from(P.STREAM_RESP, p, 0)
            if (b, f, c) != (batch, first, count):
                raise LinkError(
                    f"stream response for batch {b} samples {f}+{c}, expected "
                    f"{batch} {first}+{count}"
                )
            y = np.frombuffer(bytes(p[rs:]), dtype="<i2").astype(np.int64)
            results[first] = y.reshape(count, len(y) // count)
            sizes.append(count)
            if progress is not None:
                progress.update(count)
        wall = time.perf_counter() - t0
        outputs = np.concatenate([results[i] for i, _ in chunks])
        return StreamResult(
            outputs,
            np.array(latencies),
            np.array(sizes),
            len(rows) * n_in,
            self.link.bytes_out - out0,
            self.link.bytes_in - in0,
            wall,
            retried,
        )

    # ---- housekeeping ----------------------------------------------------------------
    def stats(self, clear: bool = False) -> dict[str, int]:
        p = self.request(P.STATS, struct.pack(P.STATS_REQ, 1 if clear else 0))
        return dict(zip(P.STATS_FIELDS, struct.unpack_from(P.STATS_RESP, p, 0), strict=True))

    def reset(self) -> None:
        """Back to the boot state: lines grounded, DACs at 0 V, model unloaded, limits
        to defaults."""
        self.request(P.RESET)
        self._info = None
        self._shape = None

    def exit(self) -> None:
        """Leave binary mode; the board returns to its REPL."""
        self.request(P.EXIT)


def _u8(x: Iterable[int]) -> bytes:
    """One input as bytes, refusing anything that is not a 1-D run of 0..255 integers."""
    if isinstance(x, bytes | bytearray):
        return bytes(x)
    arr = np.asarray(x if isinstance(x, np.ndarray) else list(x))
    if arr.ndim != 1 or (
        arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0)
    ):
        raise ValueError("an input must be a 1-D sequence of integers in 0..255")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"input values {arr.min()}..{arr.max()} outside 0..255")
    return bytes(int(v) for v in arr)
