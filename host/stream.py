"""`xbar infer`: stream inputs through a programmed board and report what it did.

    xbar infer --port P --model MODEL.xbar (--dataset digits | --input X.npy [--labels Y.npy])

The model's tile map is LOADed again (a few frames; it guarantees the board runs this
model's layout on the cells `xbar program` wrote), then the inputs are streamed with
several INFER_STREAM frames in flight. Printed: accuracy against the labels, the
accuracy of the digital int8 reference (the integer model the firmware computes, on the
same uint8 inputs) and the agreement between the two, throughput, latency percentiles
per frame, and link efficiency: input payload bytes per second ÷ the line's byte rate
(baud / 10: 8 data bits, start and stop bit).

On a faulty line (`stream_adaptive`) frames lost or refused with E_CRC are sent again,
the frame shrinks (fewer inputs per INFER_STREAM frame) after a loss and grows back
while answers come clean, and the resends allowed scale with the inputs (`retries` per
input, and `retries` + 8 failures in a row with no answer at all end the stream). A
loss is seen as soon as a later request is answered (the board answers in order): when
an answer is later than a retransmission timeout learned from the answers, a HELLO is
sent behind the frames in flight, and only its answer coming first marks them lost (a
slow board or a loaded host is not a lost frame; sending it again would compute it
twice); nothing at all within the link's timeout ends the wait too. An answer is taken only if it
passes its CRC, answers an outstanding sequence number with INFER_STREAM's code and
echoes the frame's batch, first input and count with the right length; so outputs are
those of a clean line. The summary adds goodput (input payload bytes / s) and resends.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xbar.firmware import protocol as P
from xbar.host.board import Board, StreamResult
from xbar.host.protocol_client import FirmwareError, LinkError, LostError
from xbar.training.errors import XbarError

DEFAULT_BAUD = 921_600


@dataclass(frozen=True)
class LinkProfile:
    """A host link's payload byte rate; `duplex`: each direction has its own wire (a UART),
    else both share one bus (USB)."""

    name: str
    bytes_per_s: float
    duplex: bool


LINKS = {
    # 8N1 framing: start bit, 8 data bits, stop bit.
    "uart-921600": LinkProfile("UART 921600 baud", DEFAULT_BAUD / 10, True),
    # USB 2.0 spec §5.8.4, Table 5-9: full speed (12 Mb/s) carries at most 19 bulk
    # transactions of 64 bytes per 1 ms frame; an RP2040's USB-CDC ignores the baud setting.
    "usb-cdc": LinkProfile("USB-CDC full speed", 19 * 64 * 1000, False),
}


def link_limit(board_s: float, up_bytes: float, down_bytes: float, link: LinkProfile) -> dict:
    """A stream's rate when each inference takes `board_s` of board time and carries
    `up_bytes` to the board and `down_bytes` back, with the board and the line working in
    parallel (frames in flight): inferences/s, which one limits, and how busy each is."""
    line_s = (
        max(up_bytes, down_bytes) / link.bytes_per_s
        if link.duplex
        else (up_bytes + down_bytes) / link.bytes_per_s
    )
    period = max(board_s, line_s)
    return {
        "per_s": 1.0 / period,
        "limit": "board" if board_s >= line_s else "line",
        "board_busy": board_s / period,
        "line_busy": line_s / period,
    }


class InputError(XbarError, ValueError):
    """Inputs or labels that cannot be streamed; says which file and why."""


@dataclass
class InferReport:
    stream: StreamResult
    predictions: np.ndarray
    reference: np.ndarray  # int8 reference predictions
    labels: np.ndarray | None
    baud: int
    board_s: float | None = None  # board time over the stream (an emulated board's clock)

    @property
    def accuracy(self) -> float | None:
        return None if self.labels is None else float(np.mean(self.predictions == self.labels))

    @property
    def reference_accuracy(self) -> float | None:
        return None if self.labels is None else float(np.mean(self.reference == self.labels))

    @property
    def agreement(self) -> float:
        return float(np.mean(self.predictions == self.reference))

    @property
    def throughput(self) -> float:
        return len(self.predictions) / self.stream.wall_s

    @property
    def goodput(self) -> float:
        """Input payload bytes per second."""
        return self.stream.payload_bytes / self.stream.wall_s

    @property
    def link_efficiency(self) -> float:
        return self.goodput / (self.baud / 10)


@dataclass
class AdaptiveStreamResult(StreamResult):
    """A stream on a possibly faulty line: what it cost to get clean answers."""

    lost: int = 0  # frames whose answer never came (or came corrupted)
    crc_errors: int = 0  # frames the board answered with E_CRC
    frames_sent: int = 0  # INFER_STREAM frames written, resends included


START_FRAME = 8
"""Inputs in the first frame; it doubles while answers come clean (then grows by 1/8)."""

RTO_MIN_S = 0.25
"""Shortest wait for a frame's answer."""


def load_reliably(board: Board, plan: Any, retries: int = 3) -> tuple[int, int]:
    """LOAD the plan's blob on a possibly faulty line: (n_in, n_out).

    A LOAD_CHUNK whose answer is lost may or may not have been taken, so the load starts
    again from LOAD_BEGIN with chunks half as long; E_CRC answers are resent at once by
    the link. The board checks the blob's CRC-32 at LOAD_END."""
    blob = plan.to_blob()
    step = P.MAX_PAYLOAD - struct.calcsize(P.LOAD_CHUNK_REQ)
    failures: list[str] = []
    for _ in range(4 * retries + 4):
        try:
            board.request(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(blob), P.crc32(blob)))
            for off in range(0, len(blob), step):
                chunk = struct.pack(P.LOAD_CHUNK_REQ, off) + blob[off : off + step]
                board.request(P.LOAD_CHUNK, chunk)
            p = board.request(P.LOAD_END)
        except LostError as exc:
            failures.append(str(exc))
            step = max(16, step // 2)
            continue
        except FirmwareError as exc:
            if exc.code not in (P.E_CRC, P.E_MODEL):  # E_MODEL: a chunk taken twice
                raise
            failures.append(str(exc))
            step = max(16, step // 2)
            continue
        _layers, _tiles, n_in, n_out = struct.unpack_from(P.LOAD_END_RESP, p, 0)
        board._shape = (n_in, n_out)
        return n_in, n_out
    raise LinkError(f"LOAD failed {len(failures)} times (last: {failures[-1]})")


@dataclass
class _Frame:
    first: int
    count: int
    sent: float
    order: int  # how many frames were sent before it


def stream_adaptive(
    board: Board,
    x: np.ndarray,
    n_out: int,
    *,
    window: int | None = None,
    retries: int | None = None,
    progress: Any = None,
) -> AdaptiveStreamResult:
    """Stream x (n, n_in) uint8 codes with INFER_STREAM, adapting the frame to the line
    (module docstring); the outputs (n, n_out) in input order."""
    link = board.link
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.uint8))
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError("nothing to stream: no inputs")
    n, n_in = rows.shape
    win = max(1, window if window is not None else board.geometry.stream_window)
    retries = link.retries if retries is None else retries
    hdr, rs = struct.calcsize(P.STREAM_REQ), struct.calcsize(P.STREAM_RESP)
    fit = max(1, min(255, (P.MAX_PAYLOAD - hdr) // n_in, (P.MAX_PAYLOAD - rs) // (2 * n_out)))
    size = float(min(fit, START_FRAME))
    slow_start = True  # doubling while clean, until the first failure
    budget = retries * n  # resends allowed: scale with the work
    streak_limit = retries + 8  # failures in a row with no answer at all
    batch = link.next_seq()
    outputs = np.zeros((n, n_out), dtype=np.int64)
    todo: deque[tuple[int, int]] = deque()  # ranges to send again, first
    next_first = 0
    done = 0
    flight: OrderedDict[int, _Frame] = OrderedDict()
    latencies: list[float] = []
    sizes: list[int] = []
    recent: deque[tuple[float, int]] = deque(maxlen=16)  # (latency, inputs) of the last answers
    resent = lost = crc = sent = streak = 0
    last_cut = -1  # frames sent before the last shrink (one shrink per window of frames)
    last_answer = 0.0  # when the board last answered a frame (it works through them in order)
    backoff = 1
    out0, in0 = link.bytes_out, link.bytes_in
    t0 = time.perf_counter()

    def rto(count: int) -> float:
        """How long the answer to a frame of `count` inputs may take: 3x the slowest
        recent answer, scaled to this frame's inputs; doubled per timeout in a row."""
        if not recent:
            return link.timeout
        slowest = max(max(t for t, _ in recent), max(t / c for t, c in recent) * count)
        return min(link.timeout, max(RTO_MIN_S, 3 * slowest) * backoff)

    probes: list[tuple[int, float, int]] = []  # HELLOs sent behind late frames: seq, t, order

    def forget_probes() -> None:
        for seq, _, _ in probes:
            link.forget(seq)
        probes.clear()

    def failed(seq: int, frame: _Frame, why: str) -> None:
        nonlocal resent, streak, size, last_cut, slow_start
        link.forget(seq)
        todo.appendleft((frame.first, frame.count))
        resent += 1
        streak += 1
        slow_start = False
        if frame.order >= last_cut:  # sent after the last shrink: the line is still bad
            if size > 1:
                streak = 0  # a smaller frame gets its own tries
            size = max(1.0, size / 2)
            last_cut = sent
        if resent > budget or streak > streak_limit:
            raise LinkError(
                f"stream stopped at inputs {frame.first}..{frame.first + frame.count - 1} "
                f"({done} of {n} answered, {resent} frames resent): {why}"
            )

    while done < n:
        while len(flight) < win and (todo or next_first < n):
            count = max(1, int(size))
            if todo:
                first, want = todo.popleft()
                if want > count:
                    todo.appendleft((first + count, want - count))
                else:
                    count = want
            else:
                first, count = next_first, min(count, n - next_first)
                next_first += count
            body = (
                struct.pack(P.STREAM_REQ, batch, first, count)
                + rows[first : first + count].tobytes()
            )
            seq = link.send(P.INFER_STREAM, body)
            flight[seq] = _Frame(first, count, time.perf_counter(), sent)
            sent += 1
        front_seq, front = next(iter(flight.items()))
        wait = rto(front.count)
        since = max(front.sent, probes[-1][1]) if probes else front.sent
        got = link.poll(max(0.0, since + wait - time.perf_counter()))
        if got is None:  # the oldest request's answer is late
            backoff = min(backoff * 2, 64)
            # The front frame's own wait starts when it was sent or, if the board was
            # still answering the frames before it, at the last answer: a loaded host or
            # a slow board queues frames, it does not lose them.
            if time.perf_counter() - max(front.sent, last_answer) < link.timeout:
                # Late is not lost: a HELLO behind the frames in flight is answered after
                # them if the board is only slow, before them if they were lost.
                probes.append((link.send(P.HELLO), time.perf_counter(), sent))
                continue
            flight.pop(front_seq)
            lost += 1
            failed(front_seq, front, f"no answer within {link.timeout:.2f} s")
            forget_probes()
            continue
        seq, code, payload = got
        answered_probe = next((order for s, _, order in probes if s == seq), None)
        if answered_probe is not None:  # every frame sent before that probe is lost
            forget_probes()
            for s in [s for s, f in flight.items() if f.order < answered_probe]:
                lost += 1
                failed(s, flight.pop(s), "answer lost (a later HELLO was answered first)")
            continue
        if seq not in flight:
            continue
        forget_probes()
        while (s := next(iter(flight))) != seq:  # answered in order: earlier ones are lost
            lost += 1
            failed(s, flight.pop(s), "answer lost")
        frame = flight.pop(seq)
        if code == P.ERROR:
            err, cmd, reason = P.parse_error(payload)
            if err != P.E_CRC:
                raise LinkError(
                    f"stream stopped at inputs {frame.first}..{frame.first + frame.count - 1}: "
                    f"{FirmwareError(err, cmd, reason)}"
                )
            crc += 1
            failed(seq, frame, f"{FirmwareError(err, cmd, reason)}")
            continue
        want = rs + 2 * frame.count * n_out
        if code != (P.INFER_STREAM | P.RESPONSE) or len(payload) != want:
            raise LinkError(f"response code 0x{code:02x} of {len(payload)} B to INFER_STREAM")
        b, f, c, _credit = struct.unpack_from(P.STREAM_RESP, payload, 0)
        if (b, f, c) != (batch, frame.first, frame.count):
            raise LinkError(
                f"stream response for batch {b} samples {f}+{c}, expected "
                f"{batch} {frame.first}+{frame.count}"
            )
        y = np.frombuffer(bytes(payload[rs:]), dtype="<i2").astype(np.int64)
        outputs[frame.first : frame.first + frame.count] = y.reshape(frame.count, n_out)
        last_answer = time.perf_counter()
        latency = last_answer - frame.sent
        latencies.append(latency)
        recent.append((latency, frame.count))
        sizes.append(frame.count)
        done += frame.count
        streak = 0
        backoff = 1
        if frame.count >= int(size):  # a clean answer at the current size: grow
            size = min(float(fit), size * 2 if slow_start else size + max(1, size / 8))
        if progress is not None:
            progress.update(frame.count)
    wall = time.perf_counter() - t0
    return AdaptiveStreamResult(
        outputs,
        np.array(latencies),
        np.array(sizes),
        n * n_in,
        link.bytes_out - out0,
        link.bytes_in - in0,
        wall,
        resent,
        lost=lost,
        crc_errors=crc,
        frames_sent=sent,
    )


def dataset_inputs(art: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 inputs and labels of a bundled task's test split (the artifact's split seed)."""
    from xbar.training.tasks import load_task

    seed = int(art.metadata.get("split_seed", art.metadata.get("seed", 0)))
    task = load_task(name, seed)
    if task.n_features != art.quantized.shape[0]:
        raise InputError(
            f"the {name} dataset has {task.n_features} features, the model "
            f"takes {art.quantized.shape[0]}: it was trained on "
            f"{art.metadata.get('task', 'another task')}"
        )
    return art.quantized.quantize_input(task.x_test), task.y_test


def file_inputs(art: Any, path: str, labels: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 inputs from an .npy file: integers are codes (0..255), floats real values
    quantised with the model's input scale."""
    x = _npy(path)
    n_in = art.quantized.shape[0]
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n_in or len(x) == 0:
        raise InputError(f"{path}: inputs of shape {x.shape}; the model takes (n, {n_in})")
    if x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise InputError(f"{path}: integer inputs {x.min()}..{x.max()} outside 0..255")
        codes = x.astype(np.int64)
    elif x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise InputError(f"{path}: inputs contain NaN or infinity")
        codes = art.quantized.quantize_input(x)
    else:
        raise InputError(f"{path}: inputs of dtype {x.dtype}; expected numbers")
    y = None
    if labels is not None:
        y = _npy(labels)
        if y.shape != (len(codes),) or y.dtype.kind not in "iu":
            raise InputError(
                f"{labels}: labels of shape {y.shape} ({y.dtype}); expected "
                f"({len(codes)},) integers"
            )
    return codes, y


def _npy(path: str) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def stream_model(
    board: Board,
    art: Any,
    plan: Any,
    x: np.ndarray,
    labels: np.ndarray | None,
    *,
    window: int | None = None,
    baud: int = DEFAULT_BAUD,
    progress: Any = None,
) -> InferReport:
    """LOAD the plan's tile map, stream x, compare with the int8 reference; both
    cope with a faulty line (`load_reliably`, `stream_adaptive`)."""
    board.link.adaptive = True
    _n_in, n_out = load_reliably(board, plan, board.link.retries)
    t0 = _board_seconds(board)
    result = stream_adaptive(board, x, n_out, window=window, progress=progress)
    t1 = _board_seconds(board)
    predictions = result.outputs.argmax(axis=1)
    reference = art.quantized.forward(x).argmax(axis=1)
    board_s = None if t0 is None or t1 is None else t1 - t0
    return InferReport(result, predictions, reference, labels, baud, board_s)


def _board_seconds(board: Board) -> float | None:
    """The board's own clock where the host can read it (an `emu://` board), else None."""
    emulated = getattr(getattr(board.link, "port", None), "board", None)
    if emulated is None:
        return None
    emulated.settle()
    with emulated.hw.lock:
        return float(emulated.model.clock.seconds)


def accounting_lines(r: InferReport) -> list[str]:
    """Which one limits a stream, the board or the line, for each link profile (LINKS):
    board time per inference (the board's clock, else the wall time per inference, an
    upper bound) against the line time of the bytes each inference took."""
    s = r.stream
    n = max(1, len(r.predictions))
    measured = r.board_s is not None
    board_s = (r.board_s if r.board_s is not None else s.wall_s) / n
    up, down = s.wire_bytes_out / n, s.wire_bytes_in / n
    lines = [
        f"board time per inference {board_s * 1e3:.3f} ms "
        f"({'the board clock' if measured else 'wall time: an upper bound'}); "
        f"{up:.1f} B to the board and {down:.1f} B back per inference"
    ]
    for link in LINKS.values():
        a = link_limit(board_s, up, down, link)
        lines.append(
            f"{link.name}: {a['per_s']:.0f} inferences/s, board busy {a['board_busy']:.1%}, "
            f"line busy {a['line_busy']:.1%}; the {a['limit']} limits"
        )
    return lines


def report_lines(r: InferReport) -> list[str]:
    s = r.stream
    lines = []
    if r.labels is not None:
        lines.append(
            f"accuracy {r.accuracy:.4f} on {len(r.labels)} inputs; digital int8 "
            f"reference {r.reference_accuracy:.4f} on the same inputs"
        )
    lines.append(f"predictions equal to the int8 reference: {r.agreement:.4f}")
    p50, p90, p99 = np.percentile(s.latencies, [50, 90, 99]) * 1e3
    lines += [
        f"throughput {r.throughput:.1f} inferences/s ({s.wall_s:.2f} s wall, "
        f"{len(s.latencies)} frames of up to {int(s.frame_sizes.max())} inputs, "
        f"{s.retried} resent)",
        f"latency per frame (request written → answer decoded): p50 {p50:.1f} ms, "
        f"p90 {p90:.1f} ms, p99 {p99:.1f} ms",
        f"link efficiency {r.link_efficiency:.4f}: input payload {r.goodput:.0f} B/s ÷ line "
        f"rate {r.baud / 10:.0f} B/s ({r.baud} baud, 10 bits per byte); payload is "
        f"{s.payload_bytes / max(1, s.wire_bytes_out):.1%} of the bytes sent",
    ]
    lines += accounting_lines(r)
    if isinstance(s, AdaptiveStreamResult):
        lines.append(
            f"goodput {r.goodput:.0f} B/s of input payload; {s.retried} frames resent of "
            f"{s.frames_sent} sent ({s.lost} answers lost, {s.crc_errors} refused with "
            f"E_CRC); frames of {int(s.frame_sizes.min())}..{int(s.frame_sizes.max())} inputs"
        )
    return lines


# ---- the job of `xbar infer` -------------------------------------------------------------
def infer(
    port: str,
    model: str,
    state: str | None = None,
    dataset: str | None = None,
    inputs: str | None = None,
    labels: str | None = None,
    limit: int | None = None,
    window: int | None = None,
    baud: int = DEFAULT_BAUD,
    save: str | None = None,
    timeout: float = 10.0,
) -> InferReport:
    """Stream a bundled test split (`dataset`) or an .npy file (`inputs`) through `model` on
    the board at `port`, print the report and return it: `xbar infer` and `xbar demo`."""
    from tqdm import tqdm
    from xbar.host.program import checked_plan
    from xbar.training.artifact import load_artifact

    art = load_artifact(model)
    y: np.ndarray | None
    if dataset:
        x, y = dataset_inputs(art, dataset)
    elif inputs:
        x, y = file_inputs(art, inputs, labels)
    else:
        raise InputError("no inputs: give a dataset or an .npy file")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit}: must be at least 1")
        x, y = x[:limit], (None if y is None else y[:limit])
    if save and not Path(save).parent.exists():
        raise InputError(f"--save {save}: folder {Path(save).parent} does not exist")
    with Board.open(port, timeout=timeout) as board:
        _art, plan = checked_plan(board, model, state)
        with tqdm(total=len(x), unit="input", desc="infer", leave=False) as bar:
            report = stream_model(board, art, plan, x, y, window=window, baud=baud, progress=bar)
    for line in report_lines(report):
        print(line)
    if save:
        np.save(save, report.stream.outputs)
        print(f"wrote {save}")
    return report
