"""Energy ledger of the emulated board: joules per component, in virtual time.

Two kinds of entries add up to the total:

* **events** — a fixed energy per operation (a DAC update, an ADC conversion, a switch
  toggle, a link byte), added with :meth:`EnergyLedger.add`;
* **powers** — a component drawing a constant power until told otherwise (static
  currents of the parts, the MCU busy or idle, the array while lines are biased), set with
  :meth:`EnergyLedger.set_power` and integrated over the clock's cycles.

Powers are integrated lazily: every read (:meth:`total`, :meth:`breakdown`, :meth:`mark`)
first settles each component up to the current cycle, so the breakdown always sums to the
total and a per-command delta (``mark`` … ``since``) includes the static energy spent in
between.

Part figures are in :class:`PowerFigures` with their datasheet sources (rev B by default,
``REV_A`` the legacy board); replace it to model another board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .clock import Clock


@dataclass(frozen=True)
class PowerFigures:
    """Figures of the reference board's parts (W, J, V, s), each with its source.

    The defaults are **rev B** (docs/architecture.md, "Reference board rev B"): AD5676R
    DACs into OPA2990 line drivers on ±12 V, ADG1414 switches on ±12 V, OPA2990 TIAs
    power-gated per array, ADS8688 ADCs put in standby between uses, RP2040 at 125 MHz.
    Static powers are charged only while a part is on (the board model follows the power
    state the firmware sets). ``REV_A`` keeps the legacy board (always-on TIAs, 5 V
    switches) for comparison. Figures marked "not verified here" are quoted from the
    datasheet named without a copy of that table at hand: check them before a board is
    built.
    """

    name: str = "rev B"
    # RP2040 (Raspberry Pi, RP2040 Datasheet §5.4 "Power Consumption", Table 637): that
    # table gives Popcorn at 48 MHz, BOOTSEL, SLEEP and DORMANT, no 125 MHz figure; ~24 mA
    # from 3.3 V running code at 125 MHz and ~1.3 mA in a sleep_us wait (clocks running)
    # are estimates from those rows (not verified here).
    mcu_active_w: float = 3.3 * 24e-3
    mcu_idle_w: float = 3.3 * 1.3e-3
    # AD5676R (Analog Devices, AD5672R/AD5676R data sheet Rev. D, Table 2/"Power
    # requirements"): I_DD 1.1 mA typ at 5 V per chip in normal mode, internal reference
    # on; 4 µA in power-down (command 0x4, "Power-down operation"; the nanoDAC+ family
    # figure, not verified here for this part). Exit from power-down 4.5 µs typ
    # ("Power-down operation"). A code update charges the output stage: ~1 nJ (estimate).
    dac_static_w: float = 5.0 * 1.1e-3
    dac_powerdown_w: float = 5.0 * 4e-6
    dac_update_j: float = 1e-9
    dac_wake_s: float = 4.5e-6
    dac_out_v: tuple[float, float] = (0.0, 5.0)  # 0 … 2 × VREF (gain 2)
    # Line driver, one per line: half an OPA2990 (TI SBOS933I, §1 Features: 2.7–40 V
    # supply, 120 µA/ch quiescent, rail-to-rail output; SHDN pin on the VSSOP-10 dual,
    # pin table §5) as a difference stage on ±12 V (line = 4·V_DAC − 10 V). Shutdown
    # current ~20 µA/ch, enable time ~11 µs (§6.5 "Shutdown", not verified here).
    driver_static_w: float = 24.0 * 120e-6
    driver_shutdown_w: float = 24.0 * 20e-6
    driver_wake_s: float = 11e-6
    driver_out_v: tuple[float, float] = (-11.8, 11.8)  # rails less the output swing
    # TIA, one per column: the other half of an OPA2990, same supply and figures.
    tia_static_w: float = 24.0 * 120e-6
    tia_shutdown_w: float = 24.0 * 20e-6
    tia_wake_s: float = 11e-6
    # ADG1414 (Analog Devices, ADG1414 data sheet Rev. B: octal SPST, 8-bit SPI shift
    # register with daisy chain, the ADG714's byte format; specified on ±15 V, ±12 V and
    # +12 V supplies): analog signal range V_SS … V_DD, here ±12 V. I_DD 1 µA max and
    # charge injection ~2 pC per toggle at ±12 V (electrical characteristics tables, not
    # verified here).
    sw_static_w: float = 24.0 * 1e-6
    sw_toggle_j: float = 2e-12 * 12.0
    sw_signal_v: tuple[float, float] = (-12.0, 12.0)
    # ADS8688 (TI SBAS582C, §1 Features "low power: 65 mW" at 500 kSPS; §7.1 Absolute
    # Maximum Ratings, AIN_nP to AIN_nGND ±20 V with AVDD = 5 V; §7.3 Recommended
    # Operating Conditions, AVDD 4.75–5.25 V): charged 65 mW while awake whatever the rate
    # (an upper bound: the per-conversion energy is inside it), 10.5 mW in STDBY and 15 µW
    # in PWR_DN (§7.5 Electrical Characteristics, not verified here); exit from STDBY
    # ~20 µs (§8.4.2 "STANDBY mode", not verified here).
    adc_static_w: float = 65e-3
    adc_standby_w: float = 10.5e-3
    adc_powerdown_w: float = 15e-6
    adc_conversion_j: float = 0.0
    adc_wake_s: float = 20e-6
    adc_in_v: tuple[float, float] = (-20.0, 20.0)
    # USB full speed link: PHY and CDC stack, ~22 nJ per payload byte (33 mW / 1.5 MB/s;
    # an estimate).
    link_byte_j: float = 22e-9
    # Rev A's analog front end had no power control (always on, no wake-up waits).
    gated: bool = True


REV_A = PowerFigures(
    name="rev A (legacy)",
    # AD5676 "Power requirements": 1.1 mA at 5 V; no power-down used on rev A.
    dac_powerdown_w=5.0 * 1.1e-3,
    # No line drivers on rev A: the DAC output was taken as the line (the ±10 V mapping
    # had no amplifier behind it, which is why rev A could not be built).
    driver_static_w=0.0,
    driver_shutdown_w=0.0,
    driver_out_v=(0.0, 5.0),
    # TIA: OPA4197-class precision op-amp, 1 mA per amplifier at ±12 V, always on.
    tia_static_w=24.0 * 1e-3,
    tia_shutdown_w=24.0 * 1e-3,
    # ADG714 (Rev. C): 2.7–5.5 V single supply, signals 0 V … V_DD; I_DD 1 µA; ±3 pC.
    sw_static_w=5.0 * 1e-6,
    sw_toggle_j=3e-12 * 5.0,
    sw_signal_v=(0.0, 5.5),
    # ADS8688 as rev A charged it: standby power while running, the 500 kSPS difference
    # spread over the conversions.
    adc_static_w=10.5e-3,
    adc_standby_w=10.5e-3,
    adc_conversion_j=(65e-3 - 10.5e-3) / 500e3,
    gated=False,
)
"""The legacy rev A board's figures (docs/architecture.md): kept to compare against."""


class EnergyLedger:
    """Joules per component; ``breakdown()`` always sums to ``total()``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._joules: dict[str, float] = {}
        self._power: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def add(self, component: str, joules: float) -> None:
        """Charge a one-off energy (must be >= 0)."""
        if not joules >= 0:
            raise ValueError(f"energy of {component!r} must be >= 0 J, got {joules!r}")
        self._joules[component] = self._joules.get(component, 0.0) + joules

    def set_power(self, component: str, watts: float) -> None:
        """From now on ``component`` draws ``watts`` (integrated until changed)."""
        if not watts >= 0:
            raise ValueError(f"power of {component!r} must be >= 0 W, got {watts!r}")
        self._settle(component)
        self._power[component] = float(watts)
        self._joules.setdefault(component, 0.0)

    def power(self, component: str) -> float:
        return self._power.get(component, 0.0)

    def _settle(self, component: str) -> None:
        now = self.clock.cycles
        start = self._since.get(component, now)
        watts = self._power.get(component, 0.0)
        if now > start and watts:
            self._joules[component] = (
                self._joules.get(component, 0.0) + watts * (now - start) / self.clock.mcu_hz
            )
        self._since[component] = now

    def settle(self) -> None:
        for component in list(self._power):
            self._settle(component)

    def absorb(self, joules: Mapping[str, float]) -> None:
        """Account a span the caller computed itself (the batch path).

        Call :meth:`settle` before advancing the clock over the span, then this: every
        power's integration restarts at the current cycle and ``joules`` are added.
        """
        now = self.clock.cycles
        for component in self._power:
            self._since[component] = now
        for component, value in joules.items():
            self.add(component, value)

    def breakdown(self) -> dict[str, float]:
        self.settle()
        return dict(self._joules)

    def total(self) -> float:
        return sum(self.breakdown().values())

    def mark(self) -> dict[str, float]:
        """A snapshot to pass to :meth:`since` for per-command or per-inference deltas."""
        return self.breakdown()

    def since(self, mark: Mapping[str, float]) -> dict[str, float]:
        now = self.breakdown()
        return {k: v - mark.get(k, 0.0) for k, v in now.items()}
