"""Board profiles and noise configuration for the emulated board.

A :class:`BoardProfile` is the geometry and wiring of one board: how many arrays of what
size, which cell technology (1T1R or passive 0T1R), how many parts of each kind sit on
which chip select, and the electrical figures of the wiring. The reference board
``xbar-10x10`` is exactly the one in docs/architecture.md; larger profiles repeat the same
parts and put extra chips in SPI daisy chains behind the same chip selects, so the pin map
never changes (docs/architecture.md, "Larger profiles"):

* every array owns its own lines: array ``a`` has lines ``a·(rows+cols) …``, rows first;
* line ``L`` is DAC chip ``L // 8`` channel ``L % 8``; DAC chip ``d`` is position
  ``d % dac_chain`` of the AD5676 daisy chain on ``CS_DAC[d // dac_chain]``;
* global column ``a·cols + c`` is ADC chip ``// 8`` channel ``% 8``; ADC chip ``k`` is
  position ``k % adc_chain`` of the ADS8688 daisy chain on ``CS_ADC[k // adc_chain]``;
* one ADG1414 chain (the ADG714 byte format) of ``ceil(3·lines / 8)`` chips on ``CS_SW``
  holds every switch;
* array ``a``'s line drivers and TIAs are on power gate ``a · gates // arrays``
  (``PIN_SHDN``, rev B).

Position 0 of a chain is the chip whose data input is the MCU's MOSI (and, for the ADCs,
whose SDO is the MCU's MISO). Besides the named presets, ``xbar-{n}x{rows}x{cols}`` names
build an n-array board with chains just long enough for the three DAC and five ADC selects.
Presets, name rules, pins and part counts are the firmware's own (``xbar.firmware.profiles``),
so the emulator cannot describe a board the firmware would lay out differently.

:class:`NoiseConfig` switches every noise source and non-ideality separately;
``NoiseConfig.off()`` turns all of them off, so an MVM equals the ideal product within the
converters' quantisation (the exactness tests use it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from xbar.firmware import profiles as fw
from xbar.firmware.profiles import ADC_CHANNELS, DAC_CHANNELS, SW_PER_CHIP
from xbar.training.errors import XbarError

__all__ = [
    "ADC_CHANNELS",
    "DAC_CHANNELS",
    "PROFILES",
    "SWITCHES_PER_LINE",
    "SW_PER_CHIP",
    "BoardProfile",
    "NoiseConfig",
    "ProfileError",
    "get_profile",
]

SWITCHES_PER_LINE = 3  # to DAC, to TIA, to ground (firmware/profiles.py SW_DAC ... SW_GND)


class ProfileError(XbarError, ValueError):
    """An unknown or inconsistent board profile or noise configuration."""


@dataclass(frozen=True)
class BoardProfile:
    """Geometry, pin map and wiring figures of one board (SI units)."""

    name: str
    arrays: int
    rows: int
    cols: int
    cell: str = "1T1R"  # "1T1R" (access transistor per cell) or "0T1R" (passive)
    dac_chain: int = 1  # AD5676 chips per DAC chip select
    adc_chain: int = 1  # ADS8688 chips per ADC chip select
    mcu_hz: int = 125_000_000  # RP2040 default system clock
    # Pins (RP2040 GPIO numbers, docs/architecture.md pin table).
    pin_cs_dac: tuple[int, ...] = fw.PIN_CS_DAC
    pin_ldac: int = fw.PIN_LDAC
    pin_cs_sw: int = fw.PIN_CS_SW
    pin_cs_adc: tuple[int, ...] = fw.PIN_CS_ADC
    pin_adc_rst: int = fw.PIN_ADC_RST
    pin_gain: tuple[int, int] = (fw.PIN_GAIN0, fw.PIN_GAIN1)
    pin_led: int = fw.PIN_LED
    pin_shdn: tuple[int, ...] = fw.PIN_SHDN  # rev B power gates (high = shut down)
    bus_dac: int = fw.SPI0_ID  # SPI0 carries DACs and switches
    bus_adc: int = fw.SPI1_ID  # SPI1 carries ADCs
    # Wiring. Line resistance per cell pitch: ~1 µm Ag/Pb electrodes at 10 µm pitch.
    r_wire: float = 2.0
    # Switch on resistance: 2.5 Ω, rev A's ADG714 ("Electrical characteristics", R_ON
    # typ). Rev B's ADG1414 is higher (≈ 9.5 Ω typ at ±15 V, not verified here); the
    # network keeps 2.5 Ω until the write-verify read band (firmware VERIFY_GUARD) is
    # re-measured with it.
    r_switch: float = 2.5
    # Access transistor on resistance (1T1R only).
    r_access: float = 1_000.0
    # Board insulation leakage from every node to ground (keeps floating nets defined).
    g_leak: float = 1e-12

    def __post_init__(self) -> None:
        self.validate()

    # Derived geometry -------------------------------------------------------------
    @property
    def lines_per_array(self) -> int:
        return self.rows + self.cols

    @property
    def lines(self) -> int:
        return self.arrays * self.lines_per_array

    @property
    def columns(self) -> int:
        return self.arrays * self.cols

    @property
    def dac_chips(self) -> int:
        return -(-self.lines // DAC_CHANNELS)

    @property
    def adc_chips(self) -> int:
        return -(-self.columns // ADC_CHANNELS)

    @property
    def sw_chips(self) -> int:
        return -(-(SWITCHES_PER_LINE * self.lines) // SW_PER_CHIP)

    @property
    def dac_selects(self) -> int:
        return -(-self.dac_chips // self.dac_chain)

    @property
    def adc_selects(self) -> int:
        return -(-self.adc_chips // self.adc_chain)

    @property
    def gates(self) -> int:
        """Power gates in use (firmware Geometry.gates): one per array up to the pins."""
        return min(self.arrays, len(self.pin_shdn))

    def gate_of(self, array: int) -> int:
        return array * self.gates // self.arrays

    def row_line(self, array: int, row: int) -> int:
        return array * self.lines_per_array + row

    def col_line(self, array: int, col: int) -> int:
        return array * self.lines_per_array + self.rows + col

    def validate(self) -> BoardProfile:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ProfileError(f"board profile {self.name!r}: {what}")

        for name in ("arrays", "rows", "cols", "dac_chain", "adc_chain", "mcu_hz"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} = {value!r} must be an int >= 1")
        need(self.cell in ("1T1R", "0T1R"), f"cell = {self.cell!r} must be '1T1R' or '0T1R'")
        for name in ("r_wire", "r_switch", "r_access", "g_leak"):
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0, f"{name} = {value!r} must be >= 0")
        need(self.g_leak > 0, "g_leak must be > 0 (it defines floating nets)")
        need(
            self.dac_selects <= len(self.pin_cs_dac),
            f"{self.dac_chips} DAC chips in chains of {self.dac_chain} need "
            f"{self.dac_selects} chip selects, the board has {len(self.pin_cs_dac)}",
        )
        need(
            self.adc_selects <= len(self.pin_cs_adc),
            f"{self.adc_chips} ADC chips in chains of {self.adc_chain} need "
            f"{self.adc_selects} chip selects, the board has {len(self.pin_cs_adc)}",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _from_firmware(name: str) -> BoardProfile:
    """The board the firmware lays out for ``name`` (its ``Geometry``): presets and name
    rules have one source, so a name means the same board on both sides."""
    try:
        g = fw.Geometry(name)
    except ValueError as exc:  # a preset that does not fit the board, or an unknown name
        if name in fw.PROFILES:
            raise ProfileError(str(exc)) from None
        raise ProfileError(
            f"unknown board profile {name!r}: use one of {', '.join(fw.PROFILES)} "
            "or xbar-{arrays}x{rows}x{cols}[-passive]"
        ) from None
    return BoardProfile(name, g.arrays, g.rows, g.cols, g.cell, g.dac_chain, g.adc_chain)


PROFILES: dict[str, BoardProfile] = {name: _from_firmware(name) for name in fw.PROFILES}


def get_profile(profile: str | BoardProfile) -> BoardProfile:
    """A named preset, ``xbar-{n}x{rows}x{cols}[-passive]``, or a profile passed through."""
    if isinstance(profile, BoardProfile):
        return profile.validate()
    return PROFILES.get(profile) or _from_firmware(profile)


@dataclass(frozen=True)
class NoiseConfig:
    """Every noise source and non-ideality of the emulated board, each switchable.

    The defaults are the realistic board; :meth:`off` is the ideal one.
    """

    c2c: bool = True  # cycle-to-cycle log-normal spread of every programming pulse
    d2d: bool = True  # device-to-device spread of each cell's window and rates
    read_sigma: float = 0.01  # relative σ of each cell's read current, per conversion
    tia_noise: float = 2e-11  # A rms, TIA input-referred current noise per conversion
    adc_noise_lsb: float = 0.5  # ADS8688 transition noise, LSB rms
    stuck_rate: float = 0.01  # fraction of cells stuck (half at g_min, half at g_max)
    drift_nu: float = 0.01  # power-law relaxation exponent of programmed states
    wear: bool = True  # endurance: window shrinks with pulse count
    half_select: bool = True  # sub-threshold (V/2) pulses disturb unselected cells
    ir_drop: bool = True  # line, switch and access-transistor resistances
    damage: bool = True  # breakdown / over-compliance destroys cells

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def off(cls) -> NoiseConfig:
        """The ideal board: no noise, no variation, ideal wires (damage stays modelled)."""
        return cls(
            c2c=False,
            d2d=False,
            read_sigma=0.0,
            tia_noise=0.0,
            adc_noise_lsb=0.0,
            stuck_rate=0.0,
            drift_nu=0.0,
            wear=False,
            half_select=False,
            ir_drop=False,
        )

    @classmethod
    def preset(cls, name: str) -> NoiseConfig:
        if name == "default":
            return cls()
        if name in ("off", "ideal"):
            return cls.off()
        raise ProfileError(f"unknown noise preset {name!r}: use 'default' or 'off'")

    @property
    def read_noise_on(self) -> bool:
        """True if conversions carry read noise (one counter-based normal each)."""
        return self.read_sigma > 0 or self.tia_noise > 0 or self.adc_noise_lsb > 0

    def validate(self) -> NoiseConfig:
        for name in ("read_sigma", "tia_noise", "adc_noise_lsb", "drift_nu"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ProfileError(f"noise config: {name} = {value!r} must be a number >= 0")
        if not (0 <= self.stuck_rate <= 1):
            raise ProfileError(f"noise config: stuck_rate = {self.stuck_rate!r} not in [0, 1]")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> NoiseConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ProfileError("noise config: JSON must be an object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ProfileError(f"noise config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)
