"""Write-verify: pulse one cell toward a target conductance, reading it back after each pulse.

Kept out of the command loop (app.py parses PROGRAM and packs the results) so that the
convergence rules stand on their own. `converge` reaches the hardware only through the App
it is given: `read_cell`, and `pulse_cell`, which checks compliance first; tests put cell
physics behind those two methods."""

import profiles
import protocol
from micropython import const

# Most amplitude steps one strength update may take.
_MAX_STEPS = const(4)


def converge(app, arr, row, col, target, tol, max_p, code, start, v_step, w0, w_max, v_max):
    """Pulse toward target until |G - target| <= tol less the guard for read error.

    SET pulses when below, RESET when above, each direction with its own amplitude
    and width. Each pulse's step is compared with the error it had to close, one
    v_step of amplitude counting as a factor 2 in strength:
    * still short by more than half: the amplitude rises a step per doubling needed
      (at most _MAX_STEPS; one only if the step was under half the one before, as
      when G nears a SET level), but at most halfway to the lowest amplitude that
      overshot on this cell; at that bound or at 2 x v_line_max the width grows by
      the factor needed, up to w_max (where that bound is dropped);
    * overshoot (the error changed sign), q times too far: the width shrinks by
      1/(2q), down to w0; the rest comes off the amplitude, a step per halving, but
      at most halfway down to the last amplitude that fell short, and never below
      the host's start amplitude.
    A cell starts a step below the first amplitude that moved the cell before it in
    that direction (two if that pulse overshot). Gives up with ST_STUCK after 8
    pulses at full amplitude and width that bring G no closer to the target (by
    tol/4), or ST_COMPLIANCE when even the smallest useful pulse would exceed the
    compliance current.
    """
    i_comp = app.hal.limits[3]
    v_set = start[0]
    v_reset = start[1]
    floor = [start[2], start[3]]
    amp = [v_set, v_reset]
    wid = [w0, w0]
    lo = [0.0, 0.0]  # last amplitude that fell short at width w0 (0: none)
    hi = [v_max, v_max]  # lowest amplitude that overshot down to width w0
    seen = [0, 0]  # whether that direction has moved this cell yet
    mv = [0.0, 0.0]  # step of that direction's last pulse
    fade = [0, 0]  # whether that step was under half the one before
    g = app.read_cell(arr, row, col, code)
    g_prev = g
    err_prev = 0.0
    best = abs(g - target)  # closest approach so far
    band = tol * (1.0 - profiles.VERIFY_GUARD)  # the reading's goal: see VERIFY_GUARD
    a = 0.0
    last = -1
    futile = 0
    used = 0
    while True:
        err = g - target
        if -band <= err <= band:
            return g, used, protocol.ST_OK
        if used >= max_p:
            return g, used, protocol.ST_MAX_PULSES
        d = 0 if err < 0 else 1
        e = -err if d == 0 else err
        if e < best - tol / 4:
            best = e
            futile = 0
        elif last == d and (amp[d] >= v_max or v_step <= 0) and wid[d] >= w_max:
            futile += 1  # another pulse at full strength that came no closer
            if futile >= 8:
                return g, used, protocol.ST_STUCK
        if last >= 0:
            # Step made toward the last pulse's goal, against the error it had to close.
            moved = g - g_prev if last == 0 else g_prev - g
            need = -err_prev if last == 0 else err_prev
            if last != d:  # overshoot: `last` was moved/need times too strong
                f = 0.5 * need / moved
                w = wid[last] * f
                if w >= w0:
                    wid[last] = int(w)
                else:
                    f = w / w0
                    wid[last] = w0
                    if a < hi[last]:
                        hi[last] = a
                    v = amp[last] - v_step
                    k = 1
                    while f < 0.25 and k < _MAX_STEPS:
                        f *= 2
                        v -= v_step
                        k += 1
                    if amp[last] - lo[last] < v_step / 64:
                        lo[last] = 0.0  # stale: it fell short of a larger error
                    elif v < 0.5 * (lo[last] + amp[last]):
                        v = 0.5 * (lo[last] + amp[last])
                    amp[last] = max(v, floor[last])
            elif moved < 0.5 * need:  # still short and by much: stronger
                w = wid[d]
                if w == w0:
                    lo[d] = a
                f = 16.0 if moved <= need / 16 else 0.7 * need / moved
                v = amp[d]
                bound = 0.5 * (v + hi[d]) if hi[d] < v_max else v_max
                if v_step > 0 and v < bound - v_step / 64:
                    v += v_step
                    # Moving far less than the pulse before: near a ceiling, creep.
                    k = _MAX_STEPS if fade[d] else 1
                    while f > 4 and k < _MAX_STEPS:
                        f *= 0.5
                        v += v_step
                        k += 1
                    amp[d] = min(v, bound)
                elif w < w_max:
                    wid[d] = min(int(w * f) + 1, w_max)
                elif hi[d] < v_max:
                    hi[d] = v_max  # that overshoot is stale: the amplitude may rise again
        a = amp[d]
        if g > 0 and g * a > i_comp:
            a = 0.95 * i_comp / g
            if a < 0.5 * (v_set if d == 0 else v_reset):
                return g, used, protocol.ST_COMPLIANCE
        app.pulse_cell(arr, row, col, a if d == 0 else -a, wid[d], g)
        used += 1
        last = d
        g_prev = g
        err_prev = err
        g = app.read_cell(arr, row, col, code)
        app.busy()
        moved = g - g_prev if d == 0 else g_prev - g
        fade[d] = 1 if moved < 0.5 * mv[d] else 0
        mv[d] = moved
        if moved >= tol / 4 and not seen[d]:
            seen[d] = 1
            # The first amplitude that moved this cell, less a step (two if it
            # overshot), is where the next cell starts.
            if (g < target + tol) if d == 0 else (g > target - tol):
                start[d] = max(a - v_step, floor[d])
            else:
                start[d] = max(a - 2 * v_step, floor[d])
