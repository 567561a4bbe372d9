"""Argument types for names the user types (device presets, board profiles): a typo is a
usage error (exit 2) with "did you mean", before any work starts."""

from __future__ import annotations

import argparse
import difflib
import os


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def device(text: str) -> str:
    """A device preset, published device id or name, or a device JSON file."""
    if text.endswith(".json") or os.path.exists(text):
        return text
    from xbar.training.devices.device_model import DeviceModel
    from xbar.training.devices.published import load_published

    devices = load_published()
    known = [*DeviceModel.preset_names(), *(d.short_id for d in devices)]
    if text in known:
        return text
    try:
        DeviceModel.preset(text)
        return text
    except (KeyError, ValueError):
        pass
    raise argparse.ArgumentTypeError(
        f"no device {text!r}{_suggest(text, known)} (`xbar devices list` names them all; "
        "pvk-best, pvk-median are presets)"
    )


def profile(text: str) -> str:
    """A board profile: a named one or xbar-{arrays}x{rows}x{cols}[-passive]."""
    from xbar.firmware.profiles import PROFILES, Geometry

    try:
        Geometry(text)
        return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"no board profile {text!r}{_suggest(text, sorted(PROFILES))} (named ones: "
        f"{', '.join(sorted(PROFILES))}; or xbar-ARRAYSxROWSxCOLS[-passive])"
    )


def positive_int(text: str) -> int:
    """An integer ≥ 1 (counts, limits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (timeouts, tolerances)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number > 0")
    return value


def add_model(p: argparse.ArgumentParser, what: str = "model artifact (.xbar)") -> None:
    """`--model FILE`, with the positional form kept as an alias (older command lines)."""
    p.add_argument("--model", help=what)
    p.add_argument("model_arg", nargs="?", metavar="MODEL", help="same as --model (older form)")


def model(args: argparse.Namespace) -> str:
    """The model file named by --model or the positional alias (exactly one of them)."""
    from xbar.training.errors import UsageError

    given = [m for m in (args.model, args.model_arg) if m]
    if not given:
        raise UsageError("no model: give --model FILE.xbar")
    if len(given) == 2 and given[0] != given[1]:
        raise UsageError(f"two models: --model {given[0]} and {given[1]}; give one")
    return given[0]
