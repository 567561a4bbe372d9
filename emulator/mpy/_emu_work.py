"""Opcode counters of the instrumented firmware (emulator/work_count.py): interpreted,
viper and native, drained by the bridge client with each machine call (_emu_hw.py)."""

from array import array

W = array("i", [0, 0, 0])
