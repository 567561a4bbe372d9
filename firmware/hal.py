"""Board HAL: owns the pins and parts, the safe state, the safety limits and the two
energising primitives every command is built from (measure a set of columns with some
rows driven; pulse one cell). Both end in the safe state whatever happens (try/finally).

Safe state: every DAC at 0 V (code 32768) and every line grounded through its ground
switch; DAC switches only ever close on a DAC already at 0 V.

Power states (reference board rev B): the analog parts are on only inside `measure` and
`pulse`. Each powers up what it uses first (`power_up`: the array's DAC chips, its gate's
line drivers and TIAs, for a measurement its ADC chains), waits the datasheets' wake-up
times, and ends with `power_down` after the safe state: every DAC powered down, every
driver and TIA shut down (PIN_SHDN), every ADC in standby. (The command loop and the
inference's layer loop also call `power_down`; it costs nothing when all is off.)
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

import time
from array import array

import drivers
import kernels
import machine
import profiles
from micropython import const

_MID = const(32768)


class Scan:
    """Everything measuring a group of tiles at once needs that does not depend on the
    input, built at LOAD (`Hal.plan`), so that `Hal.scan` only fills in the row codes:
    the DAC frames with their command bytes and a slot per row, the frames before the
    lines are switched in (`up`: row codes, DAC power-up) and after (`down`: DAC
    power-down, 0 V), the power gates, the switch frame with the columns
    on their TIAs, the wanted columns and the ADC selects s_lo .. s_hi holding them.
    Frames to send are (DAC chip select, frame); gates are indices into Hal.shdn."""

    def __init__(self, rows, frames, slots, up, down, gates, sw, want, s):
        self.rows = rows
        self.frames = frames
        self.slots = slots
        self.plan = (up, down, gates)  # kernels.scan
        self.sw = sw
        self.want = want
        self.s_lo = s[0]
        self.s_hi = s[1]


class Hal:
    def __init__(self, geom):
        self.geom = geom
        Pin = machine.Pin
        out = Pin.OUT
        self.led = Pin(profiles.PIN_LED, out, value=0)
        spi0 = machine.SPI(
            profiles.SPI0_ID,
            baudrate=profiles.SPI0_BAUD,
            polarity=0,
            phase=1,
            sck=Pin(profiles.SPI0_SCK),
            mosi=Pin(profiles.SPI0_MOSI),
            miso=Pin(profiles.SPI0_MISO),
        )
        spi1 = machine.SPI(
            profiles.SPI1_ID,
            baudrate=profiles.SPI1_BAUD,
            polarity=0,
            phase=1,
            sck=Pin(profiles.SPI1_SCK),
            mosi=Pin(profiles.SPI1_MOSI),
            miso=Pin(profiles.SPI1_MISO),
        )
        dac_cs = [Pin(p, out, value=1) for p in profiles.PIN_CS_DAC[: geom.dac_selects]]
        adc_cs = [Pin(p, out, value=1) for p in profiles.PIN_CS_ADC[: geom.adc_selects]]
        self.dac = drivers.Dac(spi0, dac_cs, Pin(profiles.PIN_LDAC, out, value=1), geom)
        self.sw = drivers.Switches(spi0, Pin(profiles.PIN_CS_SW, out, value=1), geom)
        self.adc = drivers.Adc(spi1, adc_cs, Pin(profiles.PIN_ADC_RST, out, value=0), geom)
        self.gain = drivers.Gain(
            Pin(profiles.PIN_GAIN0, out, value=0), Pin(profiles.PIN_GAIN1, out, value=0)
        )
        # Measurement results for the columns of one array: code - 32768 and gain index.
        self.codes = array("h", bytes(2 * geom.columns))
        self.gains = bytearray(geom.columns)
        self.want = bytearray(geom.columns)
        self.row_codes = array("H", bytes(2 * geom.rows))
        self.col_codes = array("H", bytes(2 * geom.cols))
        kernels.reset16(self.row_codes, 0, geom.rows, _MID)
        kernels.reset16(self.col_codes, 0, geom.cols, _MID)
        self.pulses = 0
        self.busy_us = 0
        self.safety_trips = 0
        self.limits = list(profiles.SAFE_DEFAULT)
        self.end_us = 0
        self.min_width = profiles.PULSE_MIN_US
        # Power gates, high = shut down; what is powered (see power_up / power_down).
        self.shdn = [Pin(p, out, value=1) for p in profiles.PIN_SHDN[: geom.gates]]
        self.gate_on = bytearray(geom.gates)
        self.dac_on = bytearray(geom.dac_chips)
        self.adc_on = bytearray(geom.adc_selects)
        self.up = bytearray(geom.arrays)  # 1: array powered (its DAC chips and gate)
        sw = self.sw
        ldac = self.dac.ldac
        # kernels.scan's context: the calls and frames of every scan, bound once.
        self.mach = (
            self.dac.send,
            [c.off for c in self.dac.cs],
            [c.on for c in self.dac.cs],
            [p.off for p in self.shdn],
            [p.on for p in self.shdn],
            sw.cs.off,
            sw.cs.on,
            ldac.off,
            ldac.on,
            time.sleep_us,
            profiles.AFE_WAKE_US,  # >= DAC_WAKE_US
            sw.wire,
            sw.grounded,
            self.gain.set,
            profiles.N_GAINS - 1,
        )
        self.powered = False
        self._apply_limits()
        self.boot()

    # ---- limits --------------------------------------------------------------------
    def set_limits(self, v_read, v_line, width_us, i_comp):
        """Set the limits, each clamped to its hard maximum (0 or NaN: the default);
        returns the ones in force. Refuses (ValueError, nothing changed) a voltage limit
        below one DAC step or a width limit below the shortest pulse this board makes."""
        hard = profiles.SAFE_HARD
        vals = (v_read, v_line, width_us, i_comp)
        new = [0.0, 0.0, 0, 0.0]
        for i in range(4):
            v = vals[i]
            if not v > 0:  # also rejects NaN
                v = profiles.SAFE_DEFAULT[i]
            new[i] = min(v, hard[i])
        new[2] = int(new[2])
        lsb = profiles.DAC_LSB
        for i in range(2):
            if int(new[i] / lsb) < 1:
                raise ValueError(
                    "%s limit %.3g V below one DAC step (%.3g V)"
                    % ("read" if i == 0 else "line", new[i], lsb)
                )
        if new[2] < self.min_width:
            raise ValueError(
                "width limit %d us below the shortest pulse this board makes (%d us)"
                % (new[2], self.min_width)
            )
        for i in range(4):
            self.limits[i] = new[i]
        self._apply_limits()
        return self.limits

    def _apply_limits(self):
        lsb = profiles.DAC_LSB
        self.read_codes = int(self.limits[0] / lsb)
        self.line_codes = int(self.limits[1] / lsb)
        self.dac.limit = self.line_codes

    # ---- safe state ----------------------------------------------------------------
    def boot(self):
        """Power-up order: switches open, DAC reset to 0 V, ADCs ranged, lines grounded."""
        self.sw.all(drivers.Switches.FLOAT)
        self.sw.commit()
        self.dac.reset()
        self.adc.init()
        self.gain.set(profiles.N_GAINS - 1)
        self.sw.all(profiles.SW_GND)
        self.sw.commit()
        # How long ending a pulse takes (one staged switch frame), so pulse() can
        # start that frame early by as much; sending the all-ground frame again is inert.
        t = time.ticks_us()
        self.sw.send()
        self.end_us = time.ticks_diff(time.ticks_us(), t)
        # The shortest pulse: pulse()'s tail after the LDAC edge, replayed inert (LDAC
        # already high, all-ground frame), timed the way pulse() times a width.
        ldac = self.dac.ldac
        t0 = time.ticks_us()
        ldac.on()
        rest = -self.end_us - time.ticks_diff(time.ticks_us(), t0)
        if rest > 0:
            time.sleep_us(rest)
        self.sw.send()
        tail = time.ticks_diff(time.ticks_us(), t0)
        self.min_width = max(profiles.PULSE_MIN_US, tail + 1)
        # Reset left every DAC channel and ADC running: all off until needed.
        for i in range(len(self.dac_on)):
            self.dac_on[i] = 1
        for i in range(len(self.adc_on)):
            self.adc_on[i] = 1
        self.powered = True
        self.power_down()

    # ---- power states --------------------------------------------------------------
    def power_up(self, arr):
        """Power what array `arr` needs (its DAC chips, its gate) and wait the longest
        wake-up time among the parts that were off. Nothing is energised: every line is
        still on its ground switch and every DAC register at 0 V. (The ADCs wake for
        their conversions: Adc.scan.)"""
        up = self.up
        if up[arr]:
            return
        g = self.geom
        wait = 0
        first = g.row_line(arr, 0)
        lo = first >> 3
        hi = (first + g.lines_per_array - 1) >> 3
        on = self.dac_on
        if kernels.find(on, lo, hi + 1, 0) >= 0:
            self.dac.power(lo, hi, True)
            kernels.fill(on, lo, hi + 1, 1)
            wait = profiles.DAC_WAKE_US
        k = g.gate(arr)
        if not self.gate_on[k]:
            self.shdn[k].off()
            self.gate_on[k] = 1
            if wait < profiles.AFE_WAKE_US:
                wait = profiles.AFE_WAKE_US
        self.powered = True
        up[arr] = 1
        if wait:
            time.sleep_us(wait)

    def power_down(self):
        """Every line driver and TIA shut down, every DAC powered down, every ADC in
        standby (the command loop calls this after every command, inference after every
        layer); lines stay grounded through their switches."""
        if not self.powered:
            return
        self._adc_standby()  # first: a pending sample needs its TIA
        for k in range(len(self.gate_on)):
            if self.gate_on[k]:
                self.shdn[k].on()
                self.gate_on[k] = 0
        on = self.dac_on
        if kernels.find(on, 0, len(on), 1) >= 0:
            self.dac.power(0, len(on) - 1, False)
            kernels.fill(on, 0, len(on), 0)
        kernels.fill(self.up, 0, len(self.up), 0)
        self.powered = False

    def _adc_standby(self):
        """Every awake ADC chain to STDBY (its pending sample is taken, then none is)."""
        on = self.adc_on
        for sel in range(len(on)):
            if on[sel]:
                self.adc.standby(sel)
                on[sel] = 0

    def safe(self):
        """Every line to ground, then every DAC that is not at 0 V back to 0 V."""
        self.sw.all(profiles.SW_GND)
        self.sw.commit()
        self._dac_zero()

    def _dac_zero(self):
        """Every DAC register that is not at 0 V back to 0 V (lines already grounded)."""
        dac = self.dac
        staged = dac.staged
        line = 0
        while dac.dirty > 0 and line < self.geom.lines:
            if staged[line] != _MID:
                dac.write(line, _MID, True)
            line += 1
        self.dac.load()  # any input register left staged now also reads 0 V
        self.led.off()

    # ---- measure -------------------------------------------------------------------
    def measure(self, arr, r0, nr, col0, ncols):
        """Drive rows r0 .. r0+nr-1 of array `arr` with self.row_codes[r0 ...] (32768 =
        grounded), ground every other line, hold columns col0 .. col0+ncols-1 at virtual
        ground on their TIAs, and convert them with gain ranging: every column starts at
        the highest gain and steps down a decade while its TIA is near the rail. Leaves
        self.codes / self.gains (indexed by global column) for those columns.
        """
        g = self.geom
        if (
            arr < 0
            or arr >= g.arrays
            or col0 < 0
            or ncols < 1
            or col0 + ncols > g.cols
            or r0 < 0
            or nr < 1
            or r0 + nr > g.rows
        ):
            raise ValueError(
                "rows %d+%d, columns %d+%d of array %d out of range" % (r0, nr, col0, ncols, arr)
            )
        rc = self.row_codes
        r = kernels.out_of_range(rc, r0, nr, self.read_codes)
        if r >= 0:
            self.safety_trips += 1
            raise drivers.SafetyError("row %d read code %d beyond read limit" % (r, rc[r]))
        sw = self.sw
        dac = self.dac
        row_line = arr * g.lines_per_array
        col_line = row_line + g.rows
        c_lo = arr * g.cols + col0
        c_hi = c_lo + ncols
        want = self.want
        t0 = time.ticks_us()
        self.led.on()
        try:
            # Frames and input registers first (the DACs take codes while powered down),
            # then power only for the span the lines are switched in, the ADCs only for
            # the conversions.
            sw.all(profiles.SW_GND)
            sw.route(row_line + r0, nr, rc, r0, profiles.SW_DAC)  # rows at 0 V stay grounded
            sw.route(col_line + col0, ncols, rc, -1, profiles.SW_TIA)
            kernels.fill(want, c_lo, c_hi, 1)
            dac.stage(row_line + r0, rc, r0, nr, False)
            self.power_up(arr)
            sw.commit()
            dac.load()
            n = profiles.ADC_CHANNELS * self.adc.chain
            self._convert(c_lo // n, (c_hi - 1) // n)
        except BaseException:
            kernels.fill(self.adc_on, 0, len(self.adc_on), 1)  # a scan may have woken them
            raise
        finally:
            kernels.fill(want, c_lo, c_hi, 0)
            self._adc_standby()
            sw.all(profiles.SW_GND)
            sw.commit()  # every line on its ground switch: the drivers may go off
            self.power_down()
            if dac.dirty:  # every channel of the rows' chips to 0 V: a frame per chip select
                lo = (row_line + r0) >> 3
                hi = (row_line + r0 + nr - 1) >> 3
                dac.command(lo, hi, profiles.DAC_CMD_WRITE_ALL_UPDATE, _MID)
                dac.dirty -= kernels.reset16(dac.staged, lo << 3, (hi + 1) << 3, _MID)
            self._dac_zero()
            self.busy_us = (self.busy_us + time.ticks_diff(time.ticks_us(), t0)) & 0x3FFFFFFF

    def _convert(self, s_lo, s_hi):
        """Convert the wanted columns (self.want) on ADC selects s_lo .. s_hi with gain
        ranging: every column starts at the highest gain and steps down a decade while
        its TIA is near the rail. Each pass wakes the ADCs and waits ADC_WAKE_US
        (>= DAC_SETTLE_US: the rows settle too)."""
        adc = self.adc
        gain = self.gain
        gi = profiles.N_GAINS - 1
        gain.set(gi)
        while adc.scan(self.want, s_lo, s_hi, self.codes, self.gains, gi):
            gi -= 1
            gain.set(gi)

    # ---- inference: tiles of a layer measured together -------------------------------
    def plan(self, tiles):
        """A Scan measuring `tiles` at once: (array, row0, rows, input0, col0, columns)
        each, on distinct arrays (their lines, TIAs and cells are apart; they share the
        SPI frames, the waits and the gain steps). Allocates; for LOAD."""
        g = self.geom
        dac = self.dac
        chain = dac.chain
        flen = 3 * chain
        rows = []
        for t in tiles:
            line = g.row_line(t[0], t[1])
            for i in range(t[2]):
                rows.append((line + i, t[3] + i))
        keys = sorted(set([((r[0] >> 3) // chain, r[0] & 7) for r in rows]))
        frames = bytearray(flen * len(keys))
        slots = array("H", bytes(12 * len(rows)))
        cmd = profiles.DAC_CMD_WRITE << 4
        last = self.sw.n - 1
        for j in range(len(rows)):
            line, idx = rows[j]
            chip = line >> 3
            sel = chip // chain
            b = keys.index((sel, line & 7)) * flen + 3 * (chain - 1 - (chip - sel * chain))
            frames[b] = cmd | (line & 7)
            gnd = 3 * line + profiles.SW_GND
            drive = 3 * line + profiles.SW_DAC
            q = 6 * j
            slots[q] = b + 1
            slots[q + 1] = idx
            slots[q + 2] = line
            slots[q + 3] = last - (gnd >> 3)  # the switch byte of its ground switch ...
            slots[q + 4] = last - (drive >> 3)  # ... and of its DAC switch; their masks:
            slots[q + 5] = (0xFF ^ (1 << (gnd & 7))) | ((1 << (drive & 7)) << 8)
        mv = memoryview(frames)
        up = [(keys[f][0], mv[f * flen : (f + 1) * flen]) for f in range(len(keys))]
        chips = sorted(set([r[0] >> 3 for r in rows]))
        up += self._chip_frames(chips, profiles.DAC_CMD_POWER, 0)
        down = self._chip_frames(chips, profiles.DAC_CMD_POWER, profiles.DAC_PD_1K)
        down += self._chip_frames(chips, profiles.DAC_CMD_WRITE_ALL_UPDATE, _MID)
        gates = []
        sw = self.sw
        sw.all(profiles.SW_GND)
        want = bytearray(g.columns)
        lo = g.columns
        hi = 0
        for t in tiles:
            k = g.gate(t[0])
            if k not in gates:
                gates.append(k)
            sw.route(g.col_line(t[0], t[4]), t[5], self.row_codes, -1, profiles.SW_TIA)
            c = t[0] * g.cols + t[4]
            kernels.fill(want, c, c + t[5], 1)
            lo = min(lo, c)
            hi = max(hi, c + t[5])
        wire = bytes(sw.wire)
        sw.all(profiles.SW_GND)
        n = profiles.ADC_CHANNELS * self.adc.chain
        return Scan(
            len(rows),
            frames,
            slots,
            up,
            down,
            gates,
            wire,
            bytes(want),
            (lo // n, (hi - 1) // n),
        )

    def _chip_frames(self, chips, cmd, data):
        """[(chip select, frame)]: one DAC frame per select holding any of `chips`, with
        (cmd, data) for those chips and no-ops for the others."""
        chain = self.dac.chain
        out = []
        for sel in sorted(set([c // chain for c in chips])):
            frame = bytearray(3 * chain)
            for c in chips:
                if c // chain == sel:
                    k = 3 * (chain - 1 - (c - sel * chain))
                    frame[k] = cmd << 4
                    frame[k + 1] = data >> 8
                    frame[k + 2] = data & 0xFF
            out.append((sel, frame))
        return out

    def scan(self, s, x, off, k):
        """Measure the tiles of Scan s at once with inputs x[off + input] (row code 32768 +
        x * k; rows whose input is 0 stay grounded): self.codes / self.gains for their
        columns, gain-ranged as `measure` does. Allocates nothing.

        Power as in `measure`, for these rows' DAC chips and these arrays' gates: the row
        codes staged while the DACs are down, DACs and gates up for the span the lines are
        switched in (one AFE_WAKE_US wait), the ADCs awake only for their conversions;
        then every line grounded, gates shut, the DACs down and back at 0 V (one
        all-channel write per chip select): kernels.scan and kernels.adc_pass."""
        sw = self.sw
        wire = sw.wire
        wire[:] = s.sw
        j = kernels.tile_rows(s.frames, s.slots, s.rows, x, off, k, self.read_codes, wire)
        if j >= 0:
            wire[:] = sw.grounded
            self.safety_trips += 1
            raise drivers.SafetyError(
                "line %d read code %d beyond read limit"
                % (s.slots[6 * j + 2], _MID + x[off + s.slots[6 * j + 1]] * k)
            )
        if self.dac.dirty:
            self._dac_zero()  # every DAC register at 0 V before any is written
        want = self.want
        want[:] = s.want
        try:
            kernels.scan(
                self.mach, s.plan, want, s.s_lo, s.s_hi, self.adc.ctx, self.codes, self.gains
            )
        except BaseException:
            self._unwind()
            raise
        wire[:] = sw.grounded  # what the switches hold now

    def _unwind(self):
        """After a failure inside `scan`: every chip select released, every line
        grounded, every DAC reset to 0 V, then every part off."""
        for cs in self.dac.cs:
            cs.on()
        for cs in self.adc.cs:
            cs.on()
        self.sw.cs.on()
        kernels.fill(self.want, 0, len(self.want), 0)
        self.sw.all(profiles.SW_GND)
        self.sw.commit()
        self.dac.reset()
        kernels.fill(self.dac_on, 0, len(self.dac_on), 1)
        kernels.fill(self.gate_on, 0, len(self.gate_on), 1)
        kernels.fill(self.adc_on, 0, len(self.adc_on), 1)
        self.powered = True
        self.power_down()

    def busy(self, t0):
        """Add the time since ticks_us() = t0 to busy_us (STATS)."""
        self.busy_us = (self.busy_us + time.ticks_diff(time.ticks_us(), t0)) & 0x3FFFFFFF

    # ---- pulse ---------------------------------------------------------------------
    def pulse(self, arr, row, col, volts, width_us):
        """One write pulse of `volts` across cell (row, col): the row at +V/2 and the
        column at -V/2 (signs swapped for negative volts). Passive (0T1R) arrays: every
        other line grounded, so half-selected cells see at most V/2. 1T1R arrays: the
        other columns follow the row (+V/2), so the row's other cells see 0 V, and the
        other rows float, which keeps their access transistors off. The pulse starts on
        the LDAC edge that loads the staged codes and ends when one staged switch frame
        grounds every line, timed by the MCU in between. Returns the measured width (us).
        """
        g = self.geom
        if arr < 0 or arr >= g.arrays or row < 0 or row >= g.rows or col < 0 or col >= g.cols:
            raise ValueError("cell (%d, %d) of array %d out of range" % (row, col, arr))
        half = self._half(volts)
        if width_us < self.min_width or width_us > self.limits[2]:
            self.safety_trips += 1
            raise drivers.SafetyError(
                "pulse width %d us outside %d..%d us" % (width_us, self.min_width, self.limits[2])
            )
        rl = g.row_line(arr, row)
        cl = g.col_line(arr, col)
        sw = self.sw
        dac = self.dac
        self.power_up(arr)
        t_start = time.ticks_us()
        self.led.on()
        try:
            follow = g.cell == "1T1R"
            c0 = g.col_line(arr, 0)
            r0 = g.row_line(arr, 0)
            sw.all(profiles.SW_GND)
            sw.from_ground(rl, profiles.SW_DAC)
            if follow:
                for c in range(g.cols):
                    sw.from_ground(c0 + c, profiles.SW_DAC)
                for r in range(g.rows):
                    if r != row:
                        sw.from_ground(r0 + r, drivers.Switches.FLOAT)
            else:
                sw.from_ground(cl, profiles.SW_DAC)
            sw.commit()
            dac.write(rl, _MID + half, False)
            if follow:
                cc = self.col_codes
                for c in range(g.cols):
                    cc[c] = _MID + half
                cc[col] = _MID - half
                dac.stage(c0, cc, 0, g.cols, False)
            else:
                dac.write(cl, _MID - half, False)
            sw.all(profiles.SW_GND)  # the frame that ends the pulse, staged before it starts
            dac.ldac.off()  # falling LDAC edge: both lines step to +-V/2 together
            t0 = time.ticks_us()
            dac.ldac.on()
            rest = width_us - self.end_us - time.ticks_diff(time.ticks_us(), t0)
            if rest > 0:
                time.sleep_us(rest)
            sw.send()  # both lines back to ground on the CS_SW rising edge
            t1 = time.ticks_us()
            self.pulses += 1
            return time.ticks_diff(t1, t0)
        finally:
            self.safe()
            self.power_down()
            self.busy_us = (self.busy_us + time.ticks_diff(time.ticks_us(), t_start)) & 0x3FFFFFFF

    def _half(self, volts):
        """DAC codes each line moves (+-) for a pulse of `volts` across the cell: V/2 on
        each of two lines, so |volts| <= 2 x the line limit (else SafetyError); at the
        limit the last half step rounds down, never beyond it."""
        if not -40.0 < volts < 40.0:  # also NaN
            raise ValueError("pulse of %r V" % volts)
        a = volts if volts >= 0 else -volts
        if a > 2 * self.limits[1]:
            self.safety_trips += 1
            raise drivers.SafetyError(
                "pulse of %.3f V needs +-%.3f V lines, limit %.3f V" % (a, a / 2, self.limits[1])
            )
        half = int(a / (2 * profiles.DAC_LSB) + 0.5)
        cap = self.line_codes
        if half > cap:
            half = cap
        return half if volts >= 0 else -half

    def applied(self, volts):
        """The cell voltage pulse() really applies for `volts` (DAC quantisation)."""
        return 2 * self._half(volts) * profiles.DAC_LSB


def unique_id():
    """The MCU's unique id (rp2: the flash chip's 64-bit id)."""
    return machine.unique_id()


def watchdog(ms):
    """The hardware watchdog; the command loop feeds it after every byte or poll."""
    return machine.WDT(timeout=ms)


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)
