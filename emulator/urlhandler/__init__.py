"""pyserial URL handlers of the emulator: `emu://PROFILE?seed=N[&micropython=1]`.

pyserial's `serial_for_url` looks for a module `<package>.protocol_<scheme>` in each
package listed in `serial.protocol_handler_packages`; `register()` lists this one.
Importing `xbar.emulator` calls it, so any code that opens ports with
`serial.serial_for_url` (the host's `Board`, mpremote-style tools) accepts `emu://`.
"""

PACKAGE = __name__


def register() -> None:
    """Make `emu://` URLs known to pyserial (idempotent)."""
    import serial

    if PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(PACKAGE)
