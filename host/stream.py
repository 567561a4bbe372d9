"""`xbar infer`: stream inputs through a programmed board and report what it did.

    xbar infer --port P --model MODEL.xbar (--dataset digits | --input X.npy [--labels Y.npy])

The model's tile map is LOADed again (a few frames; it guarantees the board runs this
model's layout on the cells `xbar program` wrote), then the inputs are streamed with
several INFER_STREAM frames in flight. Printed: accuracy against the labels, the
accuracy of the digital int8 reference (the integer model the firmware computes, on the
same uint8 inputs) and the agreement between the two, throughput, latency percentiles
per frame, and link efficiency: input payload bytes per second ÷ the line's byte rate
(baud / 10: 8 data bits, start and stop bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xbar.host.board import Board, StreamResult
from xbar.training.errors import XbarError

DEFAULT_BAUD = 921_600


class InputError(XbarError, ValueError):
    """Inputs or labels that cannot be streamed; says which file and why."""


@dataclass
class InferReport:
    stream: StreamResult
    predictions: np.ndarray
    reference: np.ndarray  # int8 reference predictions
    labels: np.ndarray | None
    baud: int

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


def dataset_inputs(art: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 inputs and labels of a bundled task's test split (the artifact's split seed)."""
    from xbar.training.tasks import load_task

    seed = int(art.metadata.get("split_seed", art.metadata.get("seed", 0)))
    task = load_task(name, seed)
    if task.n_features != art.quantized.shape[0]:
        raise InputError(
            f"the {name} dataset has {task.n_features} features, the model "
            f"takes {art.quantized.shape[0]}: pass --input"
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
    """LOAD the plan's tile map, stream x, compare with the int8 reference."""
    board.load(plan, program=False)
    result = board.stream(x, window=window, progress=progress)
    predictions = result.outputs.argmax(axis=1)
    reference = art.quantized.forward(x).argmax(axis=1)
    return InferReport(result, predictions, reference, labels, baud)


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
) -> None:
    """Stream a bundled test split (`dataset`) or an .npy file (`inputs`) through `model` on
    the board at `port` and print the report: `xbar infer` and `xbar demo`."""
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
