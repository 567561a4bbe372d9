"""Reliability: protocol fuzz on both runtimes, streams on a faulty line, a bad-file corpus.

(a) Protocol fuzz (`benchmarks/_reliability_fuzz.py`): random bytes, valid-CRC frames
    with random payloads, and every command of `firmware/protocol.py` with boundary and
    out-of-range arguments, on one in-process board and one board under the real
    MicroPython interpreter (one process each, in parallel). After each case the board
    must answer HELLO; per batch: no crash (firmware thread / interpreter alive, no
    traceback on the link), no reboot, no hang (time limit per case), no E_HARDWARE
    answer, no device damage (`BoardModel.diagnostics["damage_events"]`) and no line
    beyond the firmware's hard 4 V line limit (a monitor on the model's array events:
    every event's switched-in line voltages; the model has no per-event safety record yet).
(b) Streams at BER 1e-5, 1e-4, 1e-3 (in-process, iris 4-5-3 on xbar-10x10, noise off,
    several fault seeds) with `host/stream.py`'s adaptive stream, compared with the clean
    run: completion, corrupted results accepted (rows that differ from the clean run),
    goodput and resends.
(c) Bad files through the CLI (`tests/test_bad_files.py`'s generators plus more bit
    flips, truncations, specs, sheets and I–V files): tracebacks, exit codes other than 1,
    files written.

Run: ``python -m benchmarks.bench_reliability`` (options: --frames, --inputs, --seeds,
--skip, --out).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import iris_artifact
from benchmarks.run_all import run_meta, write_results

TESTS = Path(__file__).resolve().parent.parent / "tests"
BERS = (1e-5, 1e-4, 1e-3)
MPY_SHARE = 0.7
"""Share of the fuzzed frames sent to the MicroPython board: it takes frames about three
times as fast as the in-process board (whose firmware is traced per bytecode)."""


# ---- (a) protocol fuzz ---------------------------------------------------------------------
def _fuzz_one(job: tuple[str, int, int]) -> dict[str, Any]:
    from benchmarks._reliability_fuzz import fuzz_runtime

    runtime, frames, seed = job
    return fuzz_runtime(runtime, frames, seed=seed, log=print).as_dict()


def part_fuzz(frames: int, seed: int = 0, parallel: bool = True) -> list[dict[str, Any]]:
    n_mpy = round(frames * MPY_SHARE)
    jobs = [("in-process", frames - n_mpy, seed), ("micropython", n_mpy, seed + 1)]
    from xbar.emulator.runtime_mpy import micropython_binary

    try:
        micropython_binary()
    except FileNotFoundError:
        jobs = [("in-process", frames, seed)]
    if parallel and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            return pool.map(_fuzz_one, jobs)
    return [_fuzz_one(j) for j in jobs]


# ---- (b) streams on a faulty line ------------------------------------------------------------
def stream_once(artifact: Path, x: np.ndarray, query: str) -> dict[str, Any]:
    """One load + adaptive stream on an emulated board; what it cost and what came back."""
    import serial
    import xbar.emulator  # noqa: F401 - registers emu://
    from xbar.host.board import Board
    from xbar.host.stream import load_reliably, stream_adaptive
    from xbar.training.artifact import load_artifact

    port = serial.serial_for_url(f"emu://xbar-10x10?seed=0&noise=off{query}", timeout=0.05)
    t0 = time.perf_counter()
    try:
        with Board(port, timeout=10) as board:
            board.link.adaptive = True
            _n_in, n_out = load_reliably(board, load_artifact(artifact).plan)
            r = stream_adaptive(board, x, n_out)
        faults = port.board.pty.faults  # type: ignore[attr-defined]
        counts = {} if faults is None else faults.counts()
        return {
            "completed": True,
            "outputs": r.outputs,
            "wall_s": r.wall_s,
            "payload_bytes": int(r.payload_bytes),
            "goodput_Bps": r.payload_bytes / r.wall_s,
            "frames_sent": int(r.frames_sent),
            "resent": int(r.retried),
            "lost": int(r.lost),
            "crc_errors": int(r.crc_errors),
            "frame_min": int(r.frame_sizes.min()),
            "frame_max": int(r.frame_sizes.max()),
            "flipped_bits": int(
                counts.get("to_board_flipped", 0) + counts.get("to_host_flipped", 0)
            ),
        }
    except Exception as exc:  # an incomplete stream is a figure, not a crash of the bench
        return {
            "completed": False,
            "error": f"{type(exc).__name__}: {exc}",
            "wall_s": time.perf_counter() - t0,
        }
    finally:
        port.close()


def part_streams(n_inputs: int, seeds: int, log: Any = print) -> list[dict[str, Any]]:
    x = np.random.default_rng(0).integers(0, 256, (n_inputs, 4))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        art = iris_artifact(Path(tmp))
        clean = stream_once(art, x, "")
        assert clean["completed"], clean
        rows.append(_stream_row(0.0, [clean], clean["outputs"], n_inputs))
        for i, ber in enumerate(BERS):
            runs = []
            for s in range(seeds):
                runs.append(stream_once(art, x, f"&ber={ber:g}&fault_seed={100 * i + s + 1}"))
                log(
                    f"  BER {ber:g} seed {s}: "
                    + str({k: v for k, v in runs[-1].items() if k != "outputs"})
                )
            rows.append(_stream_row(ber, runs, clean["outputs"], n_inputs))
    return rows


def _stream_row(
    ber: float, runs: list[dict[str, Any]], clean: np.ndarray, n: int
) -> dict[str, Any]:
    done = [r for r in runs if r["completed"]]
    corrupted = sum(int(np.any(r["outputs"] != clean, axis=1).sum()) for r in done)
    return {
        "ber": ber,
        "runs": len(runs),
        "inputs": n,
        "completed": len(done),
        "completion_pct": 100.0 * len(done) / len(runs),
        "results_accepted": n * len(done),
        "corrupted_accepted": corrupted,
        "goodput_Bps": float(np.mean([r["goodput_Bps"] for r in done])) if done else 0.0,
        "goodput_min_Bps": float(min(r["goodput_Bps"] for r in done)) if done else 0.0,
        "frames_sent": sum(r["frames_sent"] for r in done),
        "resent": sum(r["resent"] for r in done),
        "lost": sum(r["lost"] for r in done),
        "crc_errors": sum(r["crc_errors"] for r in done),
        "flipped_bits": sum(r["flipped_bits"] for r in done),
        "frame_min": min((r["frame_min"] for r in done), default=0),
        "frame_max": max((r["frame_max"] for r in done), default=0),
        "wall_s": sum(r["wall_s"] for r in runs),
        "errors": [r["error"] for r in runs if not r["completed"]],
    }


# ---- (c) bad-file corpus ---------------------------------------------------------------------
def _bad_files_module() -> Any:
    """tests/test_bad_files.py's generators (the tests folder on the path, as pytest has it)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import test_bad_files

    return test_bad_files


def corpus(tmp: Path) -> list[tuple[str, list[str], list[Path]]]:
    """(name, argv, folders that must not change) for every bad file, written under tmp."""
    import hashlib

    from xbar.host.cli.main import main
    from xbar.training.artifact import export_artifact
    from xbar.training.devices.device_model import DeviceModel

    bf = _bad_files_module()
    from test_tflite_export import digits_layers

    cases: list[tuple[str, list[str], list[Path]]] = []
    # Model artifacts: the test's corpus, more bit flips, more truncations.
    layers, data = digits_layers()
    good = tmp / "good.xbar"
    export_artifact(
        good,
        layers,
        data["x_train"][:200],
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile=bf.PROFILE,
        metadata={"task": "digits"},
    )
    blob = good.read_bytes()
    bad = bf.bad_artifacts(blob)
    seen = {hashlib.sha256(b).digest() for b in bad.values()}
    good_members = bf.members_of(blob)
    for offset in bf.data_offsets(blob, 16):
        for bit in (0, 3, 7):
            flipped = bytearray(blob)
            flipped[offset] ^= 1 << bit
            digest = hashlib.sha256(flipped).digest()
            if digest in seen or _same_members(bf, bytes(flipped), good_members):
                continue  # a flip in bits deflate ignores: the same file, not a bad one
            seen.add(digest)
            bad[f"flip@{offset}.{bit}"] = bytes(flipped)
    for size in np.linspace(1, len(blob) - 2, 24).astype(int):
        bad.setdefault(f"truncated@{size}", blob[:size])
    art_dir = tmp / "artifacts"
    art_dir.mkdir()
    for name, content in bad.items():
        path = art_dir / f"{name}.xbar"
        path.write_bytes(content)
        cases.append((f"artifact {name}", ["model", "show", str(path)], [art_dir]))
    # Campaign specs: the test's, and more.
    specs = dict(bf.BAD_SPECS)
    spec = bf.SPEC
    specs.update(
        {
            "budget-zero": spec.replace("budget = 10", "budget = 0"),
            "budget-negative": spec.replace("budget = 10", "budget = -5"),
            "batch-zero": spec.replace("batch = 2", "batch = 0"),
            "low-above-high": spec.replace("low = 0.0", "low = 2.0"),
            "type-unknown": spec.replace('type = "float"', 'type = "complex"'),
            "no-parameters": "[campaign]\nname = 'x'\nbatch = 2\nbudget = 10\n",
            "empty": "",
            "utf16": "\ufeff[campaign]".encode("utf-16").decode("latin-1"),
            "name-empty": spec.replace('"mini"', '""'),
            "name-nul": spec.replace('"mini"', '"a\\u0000b"'),
            "choices-empty": spec + "[parameters.c]\ntype = 'categorical'\nchoices = []\n",
            "truncated": spec[: len(spec) // 2],
        }
    )
    spec_dir = tmp / "specs"
    spec_dir.mkdir()
    for name, text in specs.items():
        path = spec_dir / f"{name}.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        store = spec_dir / f"{name}.sqlite"
        cases.append(
            (f"spec {name}", ["fab", "init", str(path), "--store", str(store)], [spec_dir])
        )
    # I–V files through `devices fit`: the test's, more flips and truncations.
    iv = bf.bad_iv_files()
    rows = bf.good_iv_rows()
    good_xlsx = bf.xlsx_bytes(rows)
    for offset in bf.data_offsets(good_xlsx, 16, only="sheet1.xml"):
        flipped = bytearray(good_xlsx)
        flipped[offset] ^= 0x21
        iv.setdefault(f"flip{offset}x.xlsx", bytes(flipped))
    text = bf.iv_csv(rows).encode()
    for frac in (0.1, 0.3, 0.5, 0.7, 0.9):
        iv[f"truncated{int(frac * 100)}.csv"] = text[: int(len(text) * frac)] + b"\x00garbage"
    iv.update(
        {
            "negative-inf.csv": bf.iv_csv(rows).encode() + b"0.5,-inf,1e-6,1e-6\n",
            "header-only.csv": b"voltage,c1,c2,c3\n",
            "no-voltage.csv": b"c1,c2\n1e-6,2e-6\n",
            "binary.csv": bytes(range(256)) * 4,
            "ragged.csv": b"voltage,c1,c2\n0.1,1e-6\n0.2,1e-6,2e-6,3e-6\n",
            "empty.xlsx": b"",
        }
    )
    iv_dir, out_dir = tmp / "iv", tmp / "iv-out"
    iv_dir.mkdir()
    out_dir.mkdir()
    for name, content in iv.items():
        path = iv_dir / name
        path.write_bytes(content)
        cases.append(
            (
                f"iv {name}",
                ["devices", "fit", str(path), "-o", str(out_dir / "model.json")],
                [out_dir],
            )
        )
    # Results sheets through `fab ingest` on a fresh campaign.
    camp = tmp / "campaign"
    camp.mkdir()
    (camp / "mini.toml").write_text(spec)
    store, sheets = camp / "mini.sqlite", camp / "sheets"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["fab", "init", str(camp / "mini.toml"), "--store", str(store)]) == 0
        assert main(["fab", "suggest", "--store", str(store), "--out", str(sheets)]) == 0
    first = next(sheets.glob("*.csv")).read_text().splitlines()[1].split(",")[0]
    results = camp / "results"
    results.mkdir()
    header = "experiment,x,usability\n"
    sheet_files = {
        "unknown-column.csv": b"experiment,speed\nE0001,1\n",
        "metric-nan.csv": f"{header}{first},,nan\n".encode(),
        "metric-inf.csv": f"{header}{first},,inf\n".encode(),
        "metric-neg-inf.csv": f"{header}{first},,-inf\n".encode(),
        "metric-text.csv": f"{header}{first},,good\n".encode(),
        "metric-1e999.csv": f"{header}{first},,1e999\n".encode(),
        "x-inf.csv": f"{header},inf,0.5\n".encode(),
        "x-nan.csv": f"{header},nan,0.5\n".encode(),
        "x-outside.csv": f"{header},7,0.5\n".encode(),
        "x-below.csv": f"{header},-7,0.5\n".encode(),
        "unknown-id.csv": f"{header}E9999,,0.5\n".encode(),
        "id-traversal.csv": f"{header}../../etc,,0.5\n".encode(),
        "repeated-id.csv": f"{header}{first},,0.5\n{first},,0.4\n".encode(),
        "latin1.csv": f"{header}{first},,0.5\n\xb5".encode("latin-1"),
        "iv-bad.csv": f"experiment,iv_file\n{first},{first}.csv\n".encode(),
        "iv-missing.csv": f"experiment,iv_file\n{first},nowhere.csv\n".encode(),
        "iv-absolute.csv": f"experiment,iv_file\n{first},/etc/passwd\n".encode(),
        "empty.csv": b"",
        "binary.csv": bytes(range(256)),
    }
    for name, content in bf.bad_iv_files().items():
        if name.endswith(".xlsx"):
            sheet_files[f"{first}.xlsx" if name == "zip-bomb.xlsx" else name] = content
    (results / f"{first}.csv").write_text(bf.iv_csv(rows, scale=1e300))
    for name, content in sheet_files.items():
        path = results / name
        path.write_bytes(content)
        cases.append(
            (
                f"sheet {name}",
                ["fab", "ingest", str(path), "--store", str(store)],
                [results, sheets],
            )
        )
    return cases


def _same_members(bf: Any, blob: bytes, good: dict[str, bytes]) -> bool:
    try:
        return bool(bf.members_of(blob) == good)
    except Exception:
        return False


def _listing(folders: list[Path]) -> list[list[tuple[str, int]]]:
    return [sorted((p.name, p.stat().st_size) for p in f.iterdir()) for f in folders]


def part_corpus(limit: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from xbar.host.cli.main import main

    failures: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    tracebacks = bad_exit = written = multi_line = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cases = corpus(Path(tmp))
        if limit is not None:
            step = max(1, len(cases) // limit)
            cases = cases[::step][:limit]
        for name, argv, folders in cases:
            kinds[name.split()[0]] = kinds.get(name.split()[0], 0) + 1
            before = _listing(folders)
            out, err = io.StringIO(), io.StringIO()
            code: Any
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code
                except BaseException:  # an exception out of the CLI is a traceback to the user
                    code = "exception"
                    err.write(traceback.format_exc())
            text = err.getvalue()
            lines = [line for line in text.splitlines() if line.strip()]
            tb = "Traceback" in text or "Traceback" in out.getvalue()
            changed = _listing(folders) != before
            one_line = len(lines) == 1 and lines[0].startswith("xbar: error: ")
            tracebacks += tb
            bad_exit += code != 1
            written += changed
            multi_line += not one_line
            if tb or code != 1 or changed or not one_line:
                failures.append(
                    {"case": name, "exit": code, "stderr": text[-400:], "written": changed}
                )
    summary = {
        "cases": sum(kinds.values()),
        "by_kind": kinds,
        "tracebacks": tracebacks,
        "exit_not_1": bad_exit,
        "files_written": written,
        "not_one_error_line": multi_line,
        "wall_s": time.perf_counter() - t0,
    }
    return summary, failures


# ---- report ------------------------------------------------------------------------------------
def markdown(meta: dict[str, Any], fuzz: list[dict], streams: list[dict], bad: dict | None) -> str:
    lines = [
        "## Reliability",
        "",
        f"Command: `{meta['command']}` ({meta['machine']}, {meta['date']}); "
        f"total {meta['wall_s']:.0f} s wall.",
        "",
    ]
    if fuzz:
        total = sum(f["frames"] for f in fuzz)
        lines += [
            f"### (a) Protocol fuzz: {total:,} frames on both runtimes",
            "",
            "Random bytes, valid-CRC frames with random payloads, and every command with "
            "boundary and out-of-range arguments generated from `firmware/protocol.py`; a "
            'HELLO after every case. Damage: `BoardModel.diagnostics["damage_events"]`; '
            'ratings: `BoardModel.diagnostics["rating_errors"]` (a part driven outside its '
            "datasheet rating); line limit: a monitor on the model's array events (|V| of "
            f"every switched-in line ≤ {meta['hard_v_line']} V + 1 DAC step).",
            "",
            "| runtime | frames | random bytes / random frames / boundary / EXIT | frames/s "
            "| HELLO failures | hangs | crashes | unrequested reboots | E_HARDWARE | "
            "damage events | rating errors | line-limit violations (events checked, peak V) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for f in fuzz:
            c = f["cases"]
            lines.append(
                f"| {f['runtime']} | {f['frames']:,} | {c.get('random-bytes', 0):,} / "
                f"{c.get('random-frame', 0):,} / {c.get('boundary', 0):,} / {c.get('exit', 0)} | "
                f"{f['frames_per_s']:.0f} | {f['hello_failures']} | {f['hangs']} | "
                f"{f['crashes']} | {f['reboots']} | {f['e_hardware']} | {f['damage_events']} | "
                f"{f.get('rating_errors', 'n/a')} | {f['line_violations']} "
                f"({f['line_events']:,}, {f['peak_line_v']:.3f} V) |"
            )
        lines += [
            "",
            "Answers seen: "
            + ", ".join(
                f"{k} {sum(f['answers'].get(k, 0) for f in fuzz):,}"
                for k in sorted({k for f in fuzz for k in f["answers"]})
            )
            + ". The two boards ran in parallel processes (frames/s is each one's own rate "
            f"while sharing the machine); EXIT ended the firmware on purpose "
            f"({sum(f['requested_reboots'] for f in fuzz)} reboots on Ctrl-D, answered HELLO "
            f"after). PROGRAM's max-pulses field was kept ≤ 16 (a legal 65535-pulse "
            "write-verify is long, not a fault).",
            "",
        ]
        ex = [e for f in fuzz for e in f["examples"]]
        if ex:
            lines += ["Findings: " + "; ".join(f"`{e}`" for e in ex[:10]), ""]
    if streams:
        lines += [
            "### (b) Adaptive stream on a faulty line",
            "",
            f"iris 4-5-3 on `xbar-10x10` (in-process, noise off), {streams[0]['inputs']} inputs "
            "per stream; each BER is run with several fault seeds, bits flipped both ways; "
            "corrupted = rows that differ from the clean run's.",
            "",
            "| BER | runs | completion | results accepted | corrupted accepted | goodput "
            "mean / min (B/s) | frames sent | resent | lost | E_CRC | bits flipped | "
            "frame size (inputs) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in streams:
            lines.append(
                f"| {'clean' if r['ber'] == 0 else format(r['ber'], 'g')} | {r['runs']} | "
                f"{r['completion_pct']:.0f} % | {r['results_accepted']:,} | "
                f"**{r['corrupted_accepted']}** | {r['goodput_Bps']:.0f} / "
                f"{r['goodput_min_Bps']:.0f} | {r['frames_sent']} | {r['resent']} | {r['lost']} | "
                f"{r['crc_errors']} | {r['flipped_bits']} | {r['frame_min']}..{r['frame_max']} |"
            )
        errs = [e for r in streams for e in r["errors"]]
        if errs:
            lines += ["", "Incomplete streams: " + "; ".join(f"`{e}`" for e in errs)]
        lines.append("")
    if bad is not None:
        kinds = ", ".join(f"{k} {v}" for k, v in bad["by_kind"].items())
        lines += [
            "### (c) Bad-file corpus through the CLI",
            "",
            "`tests/test_bad_files.py`'s generators plus more bit flips and truncations, "
            "specs, results sheets and I–V files (CSV, xlsx): `xbar model show`, `fab init`, "
            "`devices fit`, `fab ingest`.",
            "",
            "| cases | tracebacks | exit code ≠ 1 | files written | not one `xbar: error:` line "
            "| wall s |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {bad['cases']} ({kinds}) | **{bad['tracebacks']}** | **{bad['exit_not_1']}** | "
            f"**{bad['files_written']}** | {bad['not_one_error_line']} | {bad['wall_s']:.0f} |",
            "",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="fuzzed frames, both runtimes")
    parser.add_argument("--inputs", type=int, default=600, help="inputs per stream in (b)")
    parser.add_argument("--seeds", type=int, default=3, help="fault seeds per BER in (b)")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. 'c' or 'ab'")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    from xbar.firmware import profiles

    t0 = time.perf_counter()
    fuzz = [] if "a" in args.skip else part_fuzz(args.frames)
    print(json.dumps(fuzz, indent=1, default=str)[:3000])
    streams = [] if "b" in args.skip else part_streams(args.inputs, args.seeds)
    bad, failures = (None, []) if "c" in args.skip else part_corpus()
    meta = {
        **run_meta("bench_reliability", args, parser),
        "wall_s": time.perf_counter() - t0,
        "hard_v_line": profiles.SAFE_HARD[1],
        "cpus": os.cpu_count(),
    }
    results = [
        {"part": "fuzz", "runtimes": fuzz},
        {"part": "streams", "rows": streams},
        {"part": "bad_files", "summary": bad, "failures": failures},
    ]
    write_results("bench_reliability", meta, results, markdown(meta, fuzz, streams, bad), args.out)


if __name__ == "__main__":
    main()
