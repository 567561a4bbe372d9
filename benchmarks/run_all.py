"""Run every benchmark (``benchmarks/bench_*.py``) and collect their tables in BENCHMARKS.md.

Each benchmark module has ``main(argv: list[str] | None = None) -> None`` and writes
``results/<name>.json`` (the raw figures) and ``results/<name>.md`` (a Markdown section).
This script runs them in turn and assembles BENCHMARKS.md with the machine, the date and
the command, so every figure there comes from a run anyone can repeat: ``make bench`` (or
``python -m benchmarks.run_all``; ``--only NAME`` reruns one, keeping the others' results).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE.parent / "BENCHMARKS.md"


def write_results(name: str, meta: dict, results: list, markdown: str, out: str | Path) -> None:
    """Save one benchmark's raw figures (JSON) and its section (Markdown), and show it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    (out / f"{name}.json").write_text(raw)
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def run_meta(module: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """What every benchmark records of its run: the command (with non-default options),
    the machine and the date."""
    options = "".join(
        f" --{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
        for k, v in vars(args).items()
        if k != "out" and v != parser.get_default(k)
    )  # a store_true flag set is written bare, as typed
    return {
        "command": f"python -m benchmarks.{module}{options}",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, {platform.system()} {platform.release()}"
    )


def benchmark_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def assemble() -> None:
    sections = [p.read_text().strip() for p in sorted(RESULTS.glob("bench_*.md"))]
    header = [
        "# Benchmarks",
        "",
        "Measured figures only, produced by `make bench` (`python -m benchmarks.run_all`);",
        "each section names its own command and the raw figures are in `benchmarks/results/`.",
        "",
        f"- Last assembled: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        "",
    ]
    REPORT.write_text("\n".join([*header, "\n\n".join(sections), ""]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    names = args.only or benchmark_names()
    for name in names:
        if name not in benchmark_names():
            print(f"no benchmark {name!r}; have: {', '.join(benchmark_names())}", file=sys.stderr)
            return 2
        print(f"== {name}")
        # Their own defaults: this script's arguments are not theirs.
        importlib.import_module(f"benchmarks.{name}").main([])
    assemble()
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
