"""What the commands print for people: tables that fit 100 columns (rich) and progress that
is a bar on a terminal and one line per step in a log."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

WIDTH = 100
"""Widest line a table prints: a terminal, a log or a notebook cell shows it unwrapped."""


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
    numeric: Sequence[int] = (),
) -> None:
    """`rows` under `columns` on stdout, wrapped within WIDTH columns (long cells fold
    onto more lines instead of widening the table). `numeric`: right-aligned columns."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for i, name in enumerate(columns):
        table.add_column(name, justify="right" if i in numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    width = min(WIDTH, Console().width) if sys.stdout.isatty() else WIDTH
    Console(width=width, soft_wrap=False, highlight=False).print(table)


class _Steps:
    """A progress report for logs: one line per tenth of the work (and at the end)."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._next = self._step()

    def _step(self) -> int:
        if not self.total:
            return 1 << 62
        return max(1, self.total // 10)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.total and (self.n >= self._next or self.n >= self.total):
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}", file=sys.stderr, flush=True)
            while self._next <= self.n:
                self._next += self._step()

    def set_postfix_str(self, s: str) -> None:  # tqdm's; a log line has no room for it
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Any:
    """A tqdm bar on a terminal; otherwise a `_Steps` that writes one line per step (no
    carriage returns filling a log). Same `update`/context-manager use."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, **kwargs)
    return _Steps(total, desc, unit)
