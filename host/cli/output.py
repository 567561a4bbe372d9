"""How a command that prints a report also answers `--json`: its report lines go to
stderr and stdout carries only the JSON of its result, for a pipe into a JSON tool."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def text_or_json(as_json: bool, job: Callable[[], T], to_json: Callable[[T], Any]) -> int:
    """Run `job`; with `as_json`, print `to_json(result)` alone on stdout. Exit code 0."""
    if not as_json:
        job()
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        result = job()
    print(json.dumps(to_json(result), indent=2, default=float))
    return 0
