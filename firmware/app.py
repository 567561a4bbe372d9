"""Command loop: frames in, one response or error frame out per request.

`run(reader, writer)` is the entry point on the board (main.py) and in the emulator.
reader: `.readinto(buf)` returning the byte count, None when no byte is ready yet (the
watchdog is fed and the loop polls again) or 0 at end of stream; it is read a byte at a
time. writer: `.write(buf)`.
The board profile comes from the `profile` argument, else from an optional flat module
`xbar_profile` (`PROFILE = "xbar-4x64"`) on the flash, else profiles.DEFAULT_PROFILE.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

import gc
import struct
from array import array

import drivers
import hal as hal_mod
import inference
import kernels
import micropython
import profiles
import protocol
import write_verify
from micropython import const

_MID = const(32768)
# Indices into App.counts, in protocol.STATS_FIELDS order.
_N_PROGRAMMED = const(2)
_N_INFER = const(3)
_N_ERRORS = const(6)
_COUNT_MASK = const(0x3FFFFFFF)  # counters wrap at 2^30: small ints on a 32-bit port
_INFER_HDR = const(3)  # struct.calcsize(protocol.INFER_REQ)
_STREAM_HDR = const(5)  # struct.calcsize(protocol.STREAM_REQ)
_STREAM_RESP = const(6)  # struct.calcsize(protocol.STREAM_RESP)


class Fail(Exception):
    """A request that cannot be honoured: carries the protocol error code and reason."""

    def __init__(self, err, reason):
        super().__init__(reason)
        self.err = err
        self.reason = reason


class Decoder(protocol.Decoder):
    """protocol.Decoder whose state can be handed to kernels.cobs_read and back, so the
    bytes inside a frame are read and decoded in a kernel."""

    def __init__(self):
        super().__init__()
        self.st = array("i", [0, 0, 0, 0])

    def lend(self):
        """The state into self.st; False while only push() may decode (a frame being
        dropped, or a CR at a frame boundary waiting for its second byte)."""
        if self.bad or self.lead:
            return False
        st = self.st
        st[0] = self.n
        st[1] = self.remain
        st[2] = self.block
        st[3] = 1 if self.started else 0
        return True

    def restore(self):
        """The state back from self.st."""
        st = self.st
        self.n = st[0]
        self.remain = st[1]
        self.block = st[2]
        self.started = st[3] != 0


def _need(payload, fmt, exact=True):
    n = struct.calcsize(fmt)
    if len(payload) < n or (exact and len(payload) != n):
        raise Fail(
            protocol.E_LENGTH,
            "payload %d bytes, expected %s%d" % (len(payload), "" if exact else ">=", n),
        )
    return struct.unpack_from(fmt, payload, 0)


class App:
    """One board's command server: HAL, model store, decoder/encoder and counters, all
    allocated at construction; `dispatch` runs one decoded request."""

    def __init__(self, writer, profile=None, watchdog=True):
        self.writer = writer
        self.geom = profiles.Geometry(profile or profiles.DEFAULT_PROFILE)
        gc.collect()
        blob = bytearray(self.geom.model_bytes)  # the largest buffer, while the heap is whole
        self.hal = hal_mod.Hal(self.geom)
        self.model = inference.Model(self.hal, blob)
        self.dec = Decoder()
        self.enc = protocol.Encoder()
        self.enc.cobs = kernels.cobs_encode
        self.busy_enc = protocol.Encoder(struct.calcsize(protocol.BUSY_MSG))
        self.t_busy = 0
        self.busy_at = [0, 0, 0]  # the long command being run: command, units done, in all
        self.wdt = hal_mod.watchdog(profiles.WDT_MS) if watchdog else None
        self.exit = False
        self.counts = [0] * len(protocol.STATS_FIELDS)
        self.t_boot = hal_mod.ticks_ms()
        self.g_out = memoryview(bytearray(4 * self.geom.cols))
        self.handlers = {
            protocol.HELLO: self.hello,
            protocol.INFO: self.info,
            protocol.IDENT: self.ident,
            protocol.READ: self.read,
            protocol.PULSE: self.pulse,
            protocol.PROGRAM: self.program,
            protocol.LOAD_BEGIN: self.load_begin,
            protocol.LOAD_CHUNK: self.load_chunk,
            protocol.LOAD_END: self.load_end,
            protocol.INFER: self.infer,
            protocol.INFER_STREAM: self.infer_stream,
            protocol.STATS: self.stats,
            protocol.RESET: self.reset,
            protocol.SAFETY: self.safety,
            protocol.EXIT: self.quit,
        }
        gc.collect()

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    # ---- loop ------------------------------------------------------------------------
    def loop(self, reader):
        """Read, decode and dispatch until EXIT, a terminal's Ctrl-C between frames
        (protocol.DROP_INTERRUPT: the board returns to its REPL) or end of stream.

        The reader is read one byte per call, since the board's stdin blocks until the
        whole buffer is filled; inside a frame by a kernel that also decodes
        (kernels.cobs_read), the bytes that end, drop or may interrupt a frame by the
        decoder's push(). The watchdog is fed at every frame boundary (a frame or a
        dropped one) and whenever the reader's poll times out (None), not per byte: a
        machine call per byte costs more than decoding it.
        """
        dec = self.dec
        one = bytearray(1)
        readinto = reader.readinto
        while not self.exit:
            if dec.lend():
                b = kernels.cobs_read(readinto, one, one, None, dec.buf, dec.cap, dec.st)
                dec.restore()
            else:
                n = readinto(one)
                b = 256 if n is None else (one[0] if n else 257)
            if b == 256:  # nothing arrived within the poll timeout
                self.feed()
                continue
            if b == 257:
                break
            r = dec.push(b)
            if r == protocol.FRAME:
                self.feed()
                self.dispatch(dec.code, dec.seq, dec.payload)
                self.hal.power_down()  # idle: analog parts off (hal.py, power states)
            elif r == protocol.DROPPED:
                self.feed()
                if dec.last_drop == protocol.DROP_CRC:
                    self.send_error(dec.seq, dec.code, protocol.E_CRC, "frame CRC mismatch")
                elif dec.last_drop == protocol.DROP_INTERRUPT:  # mpremote, a terminal
                    self.hal.safe()
                    self.exit = True

    def dispatch(self, code, seq, payload):
        """Run one command; every failure becomes an error frame and leaves lines safe."""
        h = self.handlers.get(code)
        try:
            if h is None:
                raise Fail(protocol.E_UNKNOWN, "unknown command 0x%02x" % code)
            n = h(payload)
        except Fail as e:
            self.send_error(seq, code, e.err, e.reason)
            return
        except drivers.SafetyError as e:
            self.send_error(seq, code, protocol.E_SAFETY, str(e))
            return
        except inference.ModelError as e:
            self.send_error(seq, code, protocol.E_MODEL, str(e))
            return
        except ValueError as e:
            self.send_error(seq, code, protocol.E_RANGE, str(e))
            return
        except MemoryError:
            self.send_error(seq, code, protocol.E_NOMEM, "out of memory")
            return
        except Exception as e:  # a hardware fault must not kill the loop
            self.hal.safe()
            self.send_error(seq, code, protocol.E_HARDWARE, "%s: %s" % (type(e).__name__, e))
            return
        self.writer.write(self.enc.finish(code | protocol.RESPONSE, seq, n))

    def busy(self):
        """Tell the host, at most every `profiles.BUSY_MS`, that the board is alive and
        running the command in busy_at (protocol.BUSY): a host that starts while a long
        command left by an earlier one runs then waits for it rather than giving the
        board up. Called per pulse, not per cell: one cell can outlast a host's timeout."""
        now = hal_mod.ticks_ms()
        if hal_mod.ticks_diff(now, self.t_busy) < profiles.BUSY_MS:
            return
        self.t_busy = now
        enc = self.busy_enc
        b = self.busy_at
        struct.pack_into(protocol.BUSY_MSG, enc.payload, 0, b[0], b[1], b[2])
        seq = self.dec.seq  # of the request being run: the decoder holds it until the next
        self.writer.write(enc.finish(protocol.BUSY | protocol.RESPONSE, seq, len(enc.payload)))

    def send_error(self, seq, cmd, err, reason):
        self.counts[_N_ERRORS] += 1
        p = protocol.error_payload(err, cmd, reason)
        self.enc.payload[: len(p)] = p
        self.writer.write(self.enc.finish(protocol.ERROR, seq, len(p)))

    def _text(self, off, s):
        b = s.encode()
        self.enc.payload[off : off + len(b)] = b
        return off + len(b)

    # ---- commands ----------------------------------------------------------------------
    def hello(self, p):
        _need(p, "")
        v = profiles.FW_VERSION
        struct.pack_into(
            protocol.HELLO_RESP,
            self.enc.payload,
            0,
            protocol.VERSION,
            v[0],
            v[1],
            v[2],
            protocol.MAX_PAYLOAD,
        )
        return self._text(struct.calcsize(protocol.HELLO_RESP), self.geom.name)

    def ident(self, p):
        _need(p, "")
        uid = hal_mod.unique_id()
        self.enc.payload[: len(uid)] = uid
        return len(uid)

    def info(self, p):
        _need(p, "")
        g = self.geom
        gc.collect()
        struct.pack_into(
            protocol.INFO_RESP,
            self.enc.payload,
            0,
            g.arrays,
            g.rows,
            g.cols,
            profiles.N_GAINS,
            profiles.DAC_LSB,
            profiles.ADC_LSB,
            gc.mem_free(),
            len(self.model.blob),
            profiles.MAX_LAYERS,
            profiles.MAX_TILES,
            profiles.MAX_WIDTH,
            profiles.STREAM_WINDOW,
            *self.hal.limits,
        )
        return self._text(struct.calcsize(protocol.INFO_RESP), g.name)

    def safety(self, p):
        op, v_read, v_line, width, i_comp = _need(p, protocol.SAFETY_REQ)
        if op == 1:
            self.hal.set_limits(v_read, v_line, width, i_comp)
        elif op != 0:
            raise Fail(protocol.E_RANGE, "SAFETY op %d (0 get, 1 set)" % op)
        lim = self.hal.limits
        hard = profiles.SAFE_HARD
        n = struct.calcsize(protocol.SAFETY_LIMITS)
        struct.pack_into(protocol.SAFETY_LIMITS, self.enc.payload, 0, *lim)
        struct.pack_into(protocol.SAFETY_LIMITS, self.enc.payload, n, *hard)
        return 2 * n

    def _read_code(self, volts):
        """DAC code for a read voltage; refuses 0 V and anything beyond the read limit."""
        if not -20.0 < volts < 20.0:  # also NaN
            raise Fail(protocol.E_RANGE, "read voltage %r V" % volts)
        d = int(volts / profiles.DAC_LSB + (0.5 if volts >= 0 else -0.5))
        if d == 0:
            raise Fail(protocol.E_RANGE, "read voltage %r V rounds to 0 V" % volts)
        if d > self.hal.read_codes or -d > self.hal.read_codes:
            self.hal.safety_trips += 1
            raise Fail(
                protocol.E_SAFETY,
                "read voltage %.4f V beyond the %.4f V limit" % (volts, self.hal.limits[0]),
            )
        return _MID + d

    def _check_cell(self, arr, row, col):
        g = self.geom
        if arr >= g.arrays or row >= g.rows or col >= g.cols:
            raise Fail(
                protocol.E_RANGE,
                "cell (%d, %d) of array %d outside %dx%dx%d"
                % (row, col, arr, g.arrays, g.rows, g.cols),
            )

    def _measure_row(self, arr, row, code, col0, ncols):
        """Conductances (S) of cells (row, col0 ...) into self.g_out; returns saturations."""
        h = self.hal
        h.row_codes[row] = code
        h.measure(arr, row, 1, col0, ncols)
        volts = (code - _MID) * profiles.DAC_LSB
        sat = 0
        base = arr * self.geom.cols
        for i in range(ncols):
            c = base + col0 + i
            v = h.codes[c]
            gi = h.gains[c]
            if gi == 0 and (v > profiles.ADC_SAT or -v > profiles.ADC_SAT):
                sat += 1
            g = -v * profiles.ADC_LSB / profiles.TIA_RF[gi] / volts
            struct.pack_into("<f", self.g_out, 4 * i, g)
        return sat

    def read_cell(self, arr, row, col, code):
        self._measure_row(arr, row, code, col, 1)
        return struct.unpack_from("<f", self.g_out, 0)[0]

    def read(self, p):
        arr, mode, row, col, volts = _need(p, protocol.READ_REQ)
        code = self._read_code(volts)
        g = self.geom
        out = self.enc.payload
        off = struct.calcsize(protocol.READ_RESP)
        if mode == protocol.READ_CELL:
            self._check_cell(arr, row, col)
            sat = self._measure_row(arr, row, code, col, 1)
            out[off : off + 4] = self.g_out[0:4]
            count = 1
        elif mode == protocol.READ_ROW:
            self._check_cell(arr, row, 0)
            sat = self._measure_row(arr, row, code, 0, g.cols)
            out[off : off + 4 * g.cols] = self.g_out
            count = g.cols
        elif mode == protocol.READ_ARRAY:
            self._check_cell(arr, 0, 0)
            count = g.rows * g.cols
            if off + 4 * count > protocol.MAX_PAYLOAD:
                raise Fail(protocol.E_RANGE, "%d cells exceed one frame; read rows" % count)
            sat = 0
            for r in range(g.rows):
                sat += self._measure_row(arr, r, code, 0, g.cols)
                o = off + 4 * g.cols * r
                out[o : o + 4 * g.cols] = self.g_out
                self.feed()
        else:
            raise Fail(protocol.E_RANGE, "READ mode %d (0 cell, 1 row, 2 array)" % mode)
        struct.pack_into(protocol.READ_RESP, out, 0, mode, count, sat)
        return off + 4 * count

    def pulse_cell(self, arr, row, col, volts, width, g_pre):
        """One pulse after the compliance check on the cell's last read conductance."""
        i_pred = abs(g_pre * self.hal.applied(volts))
        if i_pred > self.hal.limits[3]:
            self.hal.safety_trips += 1
            raise Fail(
                protocol.E_COMPLIANCE,
                "predicted %.3g A through (%d, %d) beyond %.3g A"
                % (i_pred, row, col, self.hal.limits[3]),
            )
        w = self.hal.pulse(arr, row, col, volts, width)
        self.feed()
        return w

    def _compliance_code(self):
        """Read code used for compliance and verify reads: at most 0.1 V."""
        v = min(0.1, self.hal.limits[0])
        return _MID + int(v / profiles.DAC_LSB)

    def _check_pulse(self, amp, w_min, w_max):
        """Refuse pulse amplitudes (V across the cell) and widths the board cannot make
        (E_RANGE) or that break a limit in force (E_SAFETY), before anything is driven."""
        h = self.hal
        if amp > 2 * h.limits[1] or w_max > h.limits[2]:
            h.safety_trips += 1
            raise Fail(
                protocol.E_SAFETY,
                "pulse of %.3f V, %d us beyond 2 x the %.3f V line limit / %d us"
                % (amp, w_max, h.limits[1], h.limits[2]),
            )
        if h.applied(amp) <= 0:
            raise Fail(protocol.E_RANGE, "amplitude %.3g V rounds to 0 V" % amp)
        if w_min < h.min_width:
            raise Fail(
                protocol.E_RANGE,
                "pulse width %d us below the shortest this board makes (%d us)"
                % (w_min, h.min_width),
            )

    def pulse(self, p):
        arr, pol, row, col, amp, width = _need(p, protocol.PULSE_REQ)
        self._check_cell(arr, row, col)
        if pol != protocol.SET and pol != protocol.RESET_POLARITY:
            raise Fail(protocol.E_RANGE, "polarity %d (0 SET, 1 RESET)" % pol)
        if not 0 < amp < 40.0:  # also NaN; the line limit refuses far less
            raise Fail(protocol.E_RANGE, "amplitude %r V must be > 0" % amp)
        self._check_pulse(amp, width, width)
        volts = amp if pol == protocol.SET else -amp
        g_pre = self.read_cell(arr, row, col, self._compliance_code())
        w = self.pulse_cell(arr, row, col, volts, width, g_pre)
        struct.pack_into(
            protocol.PULSE_RESP, self.enc.payload, 0, abs(self.hal.applied(volts)), w, g_pre
        )
        return struct.calcsize(protocol.PULSE_RESP)

    def program(self, p):
        hdr = _need(p, protocol.PROGRAM_REQ, exact=False)
        arr, _flags, n, max_p, tol, v_read, v_set, v_reset, v_step, w0, w_max = hdr
        off = struct.calcsize(protocol.PROGRAM_REQ)
        csz = struct.calcsize(protocol.PROGRAM_CELL)
        rsz = struct.calcsize(protocol.PROGRAM_RESULT)
        if len(p) != off + n * csz:
            raise Fail(
                protocol.E_LENGTH,
                "PROGRAM of %d cells needs %d bytes, got %d" % (n, off + n * csz, len(p)),
            )
        if 2 + n * rsz > protocol.MAX_PAYLOAD:
            raise Fail(protocol.E_RANGE, "%d cells exceed one response frame" % n)
        if not (tol > 0 and 0 < v_set < 40 and 0 < v_reset < 40 and 0 <= v_step < 40 and w0 >= 1):
            raise Fail(protocol.E_RANGE, "tolerance, amplitudes and start width must be > 0")
        code = self._read_code(v_read)
        v_max = 2 * self.hal.limits[1]  # V/2 on each of two lines
        # w0 is where write-verify starts: a board whose shortest pulse is longer (long
        # switch chains) starts there; the width limit in force still bounds it below.
        w0 = max(w0, self.hal.min_width)
        self._check_pulse(v_set, w0, w0)
        self._check_pulse(v_reset, w0, w0)
        w_max = min(max(w_max, w0), self.hal.limits[2])
        cells = []
        for i in range(n):
            row, col, target = struct.unpack_from(protocol.PROGRAM_CELL, p, off + i * csz)
            self._check_cell(arr, row, col)
            if not target > 0:
                raise Fail(protocol.E_RANGE, "cell %d target %r S must be > 0" % (i, target))
            cells.append((row, col, target))
        out = self.enc.payload
        struct.pack_into(protocol.PROGRAM_RESP, out, 0, n)
        # Cells of one array switch alike: each cell starts one step below the amplitude
        # that first moved the cell before it in that direction, not from the bottom.
        start = [v_set, v_reset, v_set, v_reset]  # learned, then the host's floors
        self.t_busy = hal_mod.ticks_ms()
        b = self.busy_at
        b[0] = protocol.PROGRAM
        b[2] = n
        for i in range(n):
            row, col, target = cells[i]
            b[1] = i
            g, used, status = write_verify.converge(
                self, arr, row, col, target, tol, max_p, code, start, v_step, w0, w_max, v_max
            )
            struct.pack_into(protocol.PROGRAM_RESULT, out, 2 + i * rsz, g, used, status)
            self.counts[_N_PROGRAMMED] += 1
        return 2 + n * rsz

    def load_begin(self, p):
        size, crc = _need(p, protocol.LOAD_BEGIN_REQ)
        self.model.begin(size, crc)
        return 0

    def load_chunk(self, p):
        (off,) = _need(p, protocol.LOAD_CHUNK_REQ, exact=False)
        if self.model.state != inference.LOADING:
            raise Fail(protocol.E_STATE, "LOAD_CHUNK without LOAD_BEGIN")
        self.model.chunk(off, p[4:])
        return 0

    def load_end(self, p):
        _need(p, "")
        m = self.model
        if m.state != inference.LOADING:
            raise Fail(protocol.E_STATE, "LOAD_END without LOAD_BEGIN")
        m.end()
        struct.pack_into(
            protocol.LOAD_END_RESP, self.enc.payload, 0, m.n_layers, m.n_tiles, m.n_in(), m.n_out()
        )
        return struct.calcsize(protocol.LOAD_END_RESP)

    def _loaded(self):
        if self.model.state != inference.LOADED:
            raise Fail(protocol.E_STATE, "no model loaded (LOAD first)")
        return self.model

    def infer(self, p):
        """INFER; allocates nothing (the request is read in place, the answer written into
        the encoder's payload)."""
        m = self._loaded()
        hs = _INFER_HDR
        n = p[1] | (p[2] << 8) if len(p) >= hs else -1
        if n != m.n_in() or len(p) != hs + n:
            raise Fail(
                protocol.E_LENGTH, "INFER needs %d input bytes, got %d" % (m.n_in(), len(p) - hs)
            )
        n_out = m.run(p, hs)
        self.counts[_N_INFER] = (self.counts[_N_INFER] + 1) & _COUNT_MASK
        out = self.enc.payload
        out[0] = n_out & 0xFF
        out[1] = n_out >> 8
        o = kernels.put_i16(out, 2, m.out, n_out)
        if p[0] & protocol.INFER_WANT_ACC:
            o = kernels.put_i32(out, o, m.acc, n_out)
        return o

    def infer_stream(self, p):
        """INFER_STREAM; allocates nothing, as INFER."""
        m = self._loaded()
        hs = _STREAM_HDR
        n_in = m.n_in()
        n_out = m.n_out()
        count = p[4] if len(p) >= hs else 0
        if count < 1 or len(p) != hs + count * n_in:
            raise Fail(
                protocol.E_LENGTH,
                "INFER_STREAM of %d samples needs %d bytes, got %d"
                % (count, hs + count * n_in, len(p)),
            )
        rs = _STREAM_RESP
        if rs + 2 * count * n_out > protocol.MAX_PAYLOAD:
            raise Fail(protocol.E_RANGE, "%d results exceed one frame" % count)
        out = self.enc.payload
        o = rs
        for s in range(count):
            m.run(p, hs + s * n_in)
            self.counts[_N_INFER] = (self.counts[_N_INFER] + 1) & _COUNT_MASK
            self.feed()
            o = kernels.put_i16(out, o, m.out, n_out)
        # STREAM_RESP: batch id and first index echoed (u16 each), count, window.
        for i in range(4):
            out[i] = p[i]
        out[4] = count
        out[5] = profiles.STREAM_WINDOW
        return o

    def stats(self, p):
        (flags,) = _need(p, protocol.STATS_REQ)
        h = self.hal
        c = self.counts
        vals = (
            h.adc.count[0],
            h.pulses,
            c[_N_PROGRAMMED],
            c[_N_INFER],
            self.dec.frames,
            self.dec.dropped,
            c[_N_ERRORS],
            h.safety_trips,
            hal_mod.ticks_diff(hal_mod.ticks_ms(), self.t_boot),
            h.busy_us,
        )  # protocol.STATS_FIELDS order
        off = 0
        for v in vals:
            struct.pack_into("<I", self.enc.payload, off, v & 0xFFFFFFFF)
            off += 4
        if flags & 1:
            h.adc.count[0] = h.pulses = h.busy_us = h.safety_trips = 0
            self.dec.frames = self.dec.dropped = 0
            for i in range(len(c)):
                c[i] = 0
            self.t_boot = hal_mod.ticks_ms()
        return off

    def reset(self, p):
        _need(p, "")
        self.model.unload()
        self.hal.set_limits(*profiles.SAFE_DEFAULT)
        self.hal.boot()
        return 0

    def quit(self, p):
        _need(p, "")
        self.hal.safe()
        self.exit = True
        return 0


def run(reader, writer, profile=None, watchdog=True):
    """Serve frames from reader until EXIT or end of stream; Ctrl-C is off meanwhile."""
    if profile is None:
        try:
            import xbar_profile  # type: ignore[import-not-found]

            profile = xbar_profile.PROFILE
        except ImportError:
            profile = profiles.DEFAULT_PROFILE
    micropython.kbd_intr(-1)
    app = None
    try:
        app = App(writer, profile, watchdog)
        app.loop(reader)
    finally:
        if app is not None:
            app.hal.safe()
        micropython.kbd_intr(3)
    return app
