"""What the commands print for people: tables that fit 100 columns (rich) and progress that
is a bar on a terminal and one line per step in a log."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
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


class LogProgress:
    """tqdm's interface for logs: one line per tenth of the work (and at the end) instead
    of a bar redrawn with carriage returns. Takes tqdm's arguments; iterates like it."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str | None = None,
        total: float | None = None,
        unit: str = "it",
        disable: bool | None = False,
        **_: Any,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc or "", total, unit
        self.disable = disable is None or bool(disable)  # tqdm: None = off unless a tty
        self.n: float = 0
        self._next = self._step()

    def _step(self) -> float:
        return max(1, int(self.total) // 10) if self.total else float("inf")

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, k: float = 1) -> None:
        self.n += k
        if self.disable or not self.total:
            return
        if self.n >= self._next or self.n >= self.total:
            total = int(self.total)
            done = int(self.n)
            print(f"{self.desc}: {done}/{total} {self.unit}", file=sys.stderr, flush=True)
            while self._next <= self.n:
                self._next += self._step()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass  # a log line has no room for it

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    @staticmethod
    def write(line: str, file: Any = None, end: str = "\n", nolock: bool = False) -> None:
        """A note between progress lines (tqdm.write)."""
        print(line, file=file or sys.stdout, end=end, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Any:
    """A tqdm bar on a terminal; otherwise a `LogProgress` (one line per step)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, **kwargs)
    return LogProgress(total=total, desc=desc, unit=unit)


def logs_without_bars() -> None:
    """Where stderr is not a terminal, every `from tqdm import tqdm` made after this gets a
    `LogProgress`: a log gets a line per step, not hundreds of redrawn bars."""
    if not sys.stderr.isatty():
        import tqdm

        tqdm.tqdm = LogProgress  # type: ignore[misc,assignment]
