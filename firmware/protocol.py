"""Wire format shared by the board and the host: COBS framing, header, CRC, codes, layouts.

This one file runs on MicroPython (flat module `protocol` on the board's flash) and on
CPython (imported by the host as `xbar.firmware.protocol`), so it sticks to the common
subset: `struct`, `binascii`, bytearray/memoryview, no `const`, no f-strings with `=`,
no typing at runtime. One source of truth for the wire format, never two copies.

Frame on the wire: COBS(raw) + b"\\x00"; raw = header + payload + CRC-32 (little-endian)
of header + payload. Header: version u8, code u8, seq u16, payload length u16.
The payload layouts below are `struct` formats (little-endian) used by both sides.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

import binascii
import struct

VERSION = 1
MAX_PAYLOAD = 1024
HEADER = "<BBHH"
HEADER_SIZE = 6
CRC_SIZE = 4
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per 254 data bytes plus one; then the 0x00 delimiter.
MAX_WIRE = MAX_RAW + MAX_RAW // 254 + 2

RESPONSE = 0x80
ERROR = 0xFF

# Command codes.
HELLO = 0x01
INFO = 0x02
IDENT = 0x03
READ = 0x10
PULSE = 0x11
PROGRAM = 0x12
LOAD_BEGIN = 0x20
LOAD_CHUNK = 0x21
LOAD_END = 0x22
INFER = 0x30
INFER_STREAM = 0x31
STATS = 0x40
RESET = 0x41
SAFETY = 0x42
EXIT = 0x43
BUSY = 0x50
"""Board -> host only, never a request: sent as `BUSY | RESPONSE` with the sequence
number of the request being run, every `profiles.BUSY_MS` while a long command (PROGRAM)
runs. A host that finds the board not answering HELLO because an earlier client left it
mid-command hears these and waits instead of taking a busy board for a dead one."""

COMMAND_NAMES = {
    HELLO: "HELLO",
    INFO: "INFO",
    IDENT: "IDENT",
    READ: "READ",
    PULSE: "PULSE",
    PROGRAM: "PROGRAM",
    LOAD_BEGIN: "LOAD_BEGIN",
    LOAD_CHUNK: "LOAD_CHUNK",
    LOAD_END: "LOAD_END",
    INFER: "INFER",
    INFER_STREAM: "INFER_STREAM",
    STATS: "STATS",
    RESET: "RESET",
    SAFETY: "SAFETY",
    EXIT: "EXIT",
}

# Error codes carried in an ERROR frame: u8 error, u8 offending command, UTF-8 reason.
E_CRC = 1
E_UNKNOWN = 2
E_LENGTH = 3
E_RANGE = 4
E_STATE = 5
E_SAFETY = 6
E_COMPLIANCE = 7
E_MODEL = 8
E_VERSION = 9
E_HARDWARE = 10
E_NOMEM = 11

ERROR_NAMES = {
    E_CRC: "bad-crc",
    E_UNKNOWN: "unknown-command",
    E_LENGTH: "bad-length",
    E_RANGE: "out-of-range",
    E_STATE: "wrong-state",
    E_SAFETY: "safety-limit",
    E_COMPLIANCE: "compliance",
    E_MODEL: "bad-model",
    E_VERSION: "bad-version",
    E_HARDWARE: "hardware",
    E_NOMEM: "no-memory",
}

# ---- payload layouts (struct formats, little-endian) ----------------------------------
# HELLO response: protocol version, fw major/minor/patch, max payload, then profile name.
HELLO_RESP = "<BBBBH"
# IDENT response: the MCU's unique id (machine.unique_id(): the RP2040's flash id, 8 bytes),
# what tells one board from another across runs and ports.
# INFO response: arrays, rows, cols, gains, DAC LSB (V), ADC LSB (V), free heap (B),
# model capacity (B), max layers, max tiles, max width, stream window, the safety limits
# in force (SAFETY_LIMITS: v_read_max, v_line_max, width_max_us, i_comp), profile name.
INFO_RESP = "<BHHBffIIHHHBffIf"
# SAFETY request: op (0 get, 1 set), v_read_max, v_line_max (V), width_max_us, i_comp (A).
# SAFETY response: the limits in force, then the hard maxima (same four fields).
SAFETY_REQ = "<BffIf"
SAFETY_LIMITS = "<ffIf"
# READ request: array, mode (0 cell, 1 row, 2 array), row, col, read voltage (V).
READ_REQ = "<BBHHf"
READ_CELL = 0
READ_ROW = 1
READ_ARRAY = 2
# READ response: mode, count, saturated count, then count x f32 conductance (S).
READ_RESP = "<BHH"
# PULSE request: array, polarity (0 SET, 1 RESET), row, col, amplitude (V, > 0), width (us).
PULSE_REQ = "<BBHHfI"
SET = 0
RESET_POLARITY = 1
# PULSE response: applied amplitude (V), measured width (us), pre-pulse conductance (S).
PULSE_RESP = "<fIf"
# PROGRAM request: array, flags, n cells, max pulses, tolerance (S), read voltage,
# SET start, RESET start, amplitude step (V), start width, max width (us); then n cells.
PROGRAM_REQ = "<BBHHfffffII"
PROGRAM_CELL = "<HHf"  # row, col, target conductance (S)
BUSY_MSG = "<BHH"  # command being run, units done, units in all (cells for PROGRAM)
PROGRAM_RESP = "<H"  # n, then n x PROGRAM_RESULT
PROGRAM_RESULT = "<fHB"  # achieved conductance (S), pulses used, status
ST_OK = 0
ST_STUCK = 1
ST_MAX_PULSES = 2
ST_COMPLIANCE = 3
# LOAD_BEGIN request: total model bytes, CRC-32 of the whole model blob.
LOAD_BEGIN_REQ = "<II"
# LOAD_CHUNK request: offset, then data bytes.
LOAD_CHUNK_REQ = "<I"
# LOAD_END response: layers, tiles, input width, output width.
LOAD_END_RESP = "<BHHH"
# INFER request: flags (bit 0: also return the last layer's int32 accumulators), n inputs,
# then n x u8. Response: n outputs, then n x i16 [+ n x i32 accumulators].
INFER_REQ = "<BH"
INFER_RESP = "<H"
INFER_WANT_ACC = 1
# INFER_STREAM request: batch id, first sample index, sample count, then count x n_in u8.
# Response: batch id, first index, count, window, then count x n_out i16.
STREAM_REQ = "<HHB"
STREAM_RESP = "<HHBB"
# STATS request: flags (bit 0: clear after reading). Response: counters below.
STATS_REQ = "<B"
STATS_RESP = "<IIIIIIIIII"
STATS_FIELDS = (
    "conversions",
    "pulses",
    "program_cells",
    "inferences",
    "frames_ok",
    "frames_dropped",
    "errors",
    "safety_trips",
    "uptime_ms",
    "busy_us",
)

# ---- model blob (LOAD) ----------------------------------------------------------------
MODEL_MAGIC = b"XBM2"
MODEL_HEADER = "<4sBBH"  # magic, n_layers, reserved, reserved
# n_in, n_out, activation, k (DAC codes per input step), n_tiles, reserved,
# g_unit (S), multiplier, shift, out_min, out_max, then per TIA gain the accumulator
# units one ADC code is worth as 4 multipliers and 4 shifts (quant.fixed, computed by
# the host: the board does no floating-point arithmetic on them).
MODEL_LAYER = "<HHBBBBfiBhh4H4b"
ACT_NONE = 0
ACT_RELU = 1
MODEL_TILE = "<BBHHHHHH"  # array, reserved, row0, col0, in_start, in_len, out_start, out_len
# Then n_out x i32 bias per layer, after that layer's tiles.


class ProtocolError(Exception):
    """A frame could not be built or parsed (bad length, version, CRC)."""


def crc32(data, value=0):
    """CRC-32 as `binascii.crc32`, masked to u32 on both interpreters."""
    return binascii.crc32(data, value) & 0xFFFFFFFF


def cobs_encode(src, n, dst):
    """COBS-encode src[:n] into dst (no delimiter); returns the encoded length.

    dst must hold n + n // 254 + 1 bytes. Written to work on preallocated buffers so the
    board never allocates per frame.
    """
    code_i = 0
    out = 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        if b == 0:
            dst[code_i] = code
            code_i = out
            out += 1
            code = 1
        else:
            dst[out] = b
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_i] = code
                code_i = out
                out += 1
                code = 1
        i += 1
    dst[code_i] = code
    return out


def cobs_decode(data):
    """Decode one COBS block (no delimiter) into bytes; ProtocolError if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("COBS: zero byte inside a frame at offset %d" % i)
        end = i + code
        if end > n:
            raise ProtocolError("COBS: block at offset %d runs past the end" % i)
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode(code, seq, payload=b""):
    """One complete wire frame (COBS + delimiter) as bytes; the host's encoder."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ProtocolError("payload of %d bytes exceeds MAX_PAYLOAD %d" % (n, MAX_PAYLOAD))
    raw = bytearray(HEADER_SIZE + n + CRC_SIZE)
    struct.pack_into(HEADER, raw, 0, VERSION, code & 0xFF, seq & 0xFFFF, n)
    raw[HEADER_SIZE : HEADER_SIZE + n] = payload
    struct.pack_into("<I", raw, HEADER_SIZE + n, crc32(memoryview(raw)[: HEADER_SIZE + n]))
    out = bytearray(len(raw) + len(raw) // 254 + 2)
    m = cobs_encode(raw, len(raw), out)
    out[m] = 0
    return bytes(out[: m + 1])


def decode(wire):
    """Decode one wire frame (with or without the trailing 0x00) to (code, seq, payload)."""
    if wire and wire[-1] == 0:
        wire = wire[:-1]
    raw = cobs_decode(wire)
    return parse_raw(raw, len(raw))


def parse_raw(raw, n):
    """Validate a decoded frame raw[:n]; returns (code, seq, payload memoryview/bytes)."""
    if n < HEADER_SIZE + CRC_SIZE:
        raise ProtocolError("frame of %d bytes is shorter than header + CRC" % n)
    ver, code, seq, plen = struct.unpack_from(HEADER, raw, 0)
    if ver != VERSION:
        raise ProtocolError("protocol version %d, expected %d" % (ver, VERSION))
    if plen != n - HEADER_SIZE - CRC_SIZE:
        raise ProtocolError("length field %d but %d payload bytes" % (plen, n - 10))
    mv = memoryview(raw)
    want = struct.unpack_from("<I", raw, n - CRC_SIZE)[0]
    if crc32(mv[: n - CRC_SIZE]) != want:
        raise ProtocolError("CRC mismatch on command 0x%02x seq %d" % (code, seq))
    return code, seq, mv[HEADER_SIZE : HEADER_SIZE + plen]


def error_payload(err, cmd, reason):
    """Payload of an ERROR frame; the reason is cut to keep the frame short."""
    r = reason.encode() if isinstance(reason, str) else bytes(reason)
    return bytes((err & 0xFF, cmd & 0xFF)) + r[:120]


def parse_error(payload):
    """(error code, offending command, reason) from an ERROR frame's payload."""
    if len(payload) < 2:
        return E_LENGTH, 0, "short error frame"
    return payload[0], payload[1], bytes(payload[2:]).decode("utf-8", "replace")


# Decoder.push() results.
NOTHING = 0
FRAME = 1
DROPPED = 2
# Why the last frame was dropped (Decoder.last_drop).
DROP_OVERSIZE = 1
DROP_COBS = 2
DROP_SHORT = 3
DROP_VERSION = 4
DROP_LENGTH = 5
DROP_CRC = 6
# Not a frame: CR, Ctrl-C at a frame boundary, what mpremote and pyboard.py send before
# entering the raw REPL. No frame starts with these two bytes (a frame's second wire byte
# is its version, 1). The board leaves binary mode for the REPL.
DROP_INTERRUPT = 7


class Decoder:
    """Streaming COBS frame decoder with resynchronisation on the next 0x00.

    Bytes are decoded as they arrive into one preallocated buffer, so the board can feed
    it a byte at a time without allocating. A frame that is oversized, truncated, not
    valid COBS, of the wrong version or length, or fails its CRC is dropped and counted;
    decoding restarts after the next 0x00. After push() returns FRAME, `code`, `seq` and
    `payload` (a memoryview into the buffer, valid until the next push) describe it.
    When a CRC fails but the header was intact, `code`/`seq` hold the header's (untrusted)
    values so the board can answer with an E_CRC error the host may match.
    """

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.cap = HEADER_SIZE + max_payload + CRC_SIZE
        self.buf = bytearray(self.cap)
        self.mv = memoryview(self.buf)
        self.dropped = 0
        self.frames = 0
        self.last_drop = 0
        self.code = 0
        self.seq = 0
        self.payload = self.mv[0:0]
        self._reset()

    def _reset(self):
        self.n = 0
        self.remain = 0  # data bytes left in the current COBS block
        self.block = 0xFF  # code of the current block (0xFF: no implicit zero pending)
        self.started = False
        self.bad = 0
        self.lead = 0  # a first byte 0x0D (CR), held until the second tells its meaning

    def push(self, b):
        """Feed one byte; returns NOTHING, FRAME or DROPPED (DROP_INTERRUPT: Ctrl-C)."""
        if b == 0:
            return self._end()
        if self.bad:
            return NOTHING
        if self.remain == 0:
            if self.started:
                if self.block != 0xFF and not self._store(0):
                    return NOTHING
            elif self.lead:
                # Second byte after a CR at a frame boundary: Ctrl-C is a terminal's
                # interrupt; anything else makes the CR the frame's first COBS code and
                # this byte its first data byte.
                self.lead = 0
                if b == 3:
                    self._reset()
                    self.dropped += 1
                    self.last_drop = DROP_INTERRUPT
                    return DROPPED
                self.started = True
                self.block = 13
                self.remain = 11
                self._store(b)
                return NOTHING
            elif b == 13:
                self.lead = 13
                return NOTHING
            self.started = True
            self.block = b
            self.remain = b - 1
            return NOTHING
        self.remain -= 1
        self._store(b)
        return NOTHING

    def _store(self, b):
        if self.n >= self.cap:
            self.bad = DROP_OVERSIZE
            return False
        self.buf[self.n] = b
        self.n += 1
        return True

    def _end(self):
        if not self.started and not self.bad and not self.lead:
            self._reset()  # empty frame: a bare delimiter, used to flush the line
            return NOTHING
        bad = self.bad
        n = self.n
        if not bad and self.remain != 0:
            bad = DROP_COBS
        if not bad and n < HEADER_SIZE + CRC_SIZE:
            bad = DROP_SHORT
        self._reset()
        if not bad:
            ver, code, seq, plen = struct.unpack_from(HEADER, self.buf, 0)
            if ver != VERSION:
                bad = DROP_VERSION
            elif plen != n - HEADER_SIZE - CRC_SIZE:
                bad = DROP_LENGTH
            else:
                self.code = code
                self.seq = seq
                want = struct.unpack_from("<I", self.buf, n - CRC_SIZE)[0]
                if crc32(self.mv[: n - CRC_SIZE]) != want:
                    bad = DROP_CRC
                else:
                    self.payload = self.mv[HEADER_SIZE : HEADER_SIZE + plen]
                    self.frames += 1
                    return FRAME
        self.dropped += 1
        self.last_drop = bad
        return DROPPED

    def feed(self, data):
        """Feed many bytes; returns the list of (code, seq, payload bytes) completed."""
        out = []
        for b in data:
            if self.push(b) == FRAME:
                out.append((self.code, self.seq, bytes(self.payload)))
        return out


class Encoder:
    """Builds wire frames in preallocated buffers (the board's transmit path)."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.raw = bytearray(HEADER_SIZE + max_payload + CRC_SIZE)
        self.payload = memoryview(self.raw)[HEADER_SIZE : HEADER_SIZE + max_payload]
        n = len(self.raw)
        self.wire = bytearray(n + n // 254 + 2)
        self.wire_mv = memoryview(self.wire)
        self.raw_mv = memoryview(self.raw)
        # The last views handed out (0: raw, 1: wire), so that a run of answers of one
        # size (INFER, INFER_STREAM) slices nothing new: the board allocates nothing.
        self.views = [[None] * 4, [None] * 4]
        self.turn = [0, 0]
        self.last = [None, None]  # the view of each handed out last: tried first
        self.cobs = cobs_encode  # the board puts a kernel with the same contract here

    def _view(self, k, mv, n):
        v = self.last[k]
        if v is not None and len(v) == n:
            return v
        views = self.views[k]
        for i in range(4):
            v = views[i]
            if v is not None and len(v) == n:
                self.last[k] = v
                return v
        v = mv[:n]
        i = self.turn[k]
        views[i] = v
        self.turn[k] = (i + 1) & 3
        self.last[k] = v
        return v

    def finish(self, code, seq, n):
        """Frame the n payload bytes already written to `payload`; returns a wire view."""
        raw = self.raw
        struct.pack_into(HEADER, raw, 0, VERSION, code & 0xFF, seq & 0xFFFF, n)
        end = HEADER_SIZE + n
        struct.pack_into("<I", raw, end, crc32(self._view(0, self.raw_mv, end)))
        m = self.cobs(raw, end + CRC_SIZE, self.wire)
        self.wire[m] = 0
        return self._view(1, self.wire_mv, m + 1)
