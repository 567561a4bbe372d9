"""xbar.emulator: the board in software.

Importing it makes `emu://PROFILE?seed=N[&micropython=1]` serial URLs known to pyserial
(see `urlhandler`), so any `serial.serial_for_url` client can open an emulated board.
"""

from xbar.emulator.urlhandler import register as _register_url_handler

_register_url_handler()
