"""Firmware sources; on the board these are flat modules, on the host `xbar.firmware`."""
