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

Part figures are in :class:`PowerFigures` with their datasheet sources; replace it to model
another board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .clock import Clock


@dataclass(frozen=True)
class PowerFigures:
    """Power and energy figures of the board's parts (W, J), with their sources."""

    # RP2040 datasheet §2.15 / "Power consumption" table: ~24 mA from the 3.3 V supply
    # running code at 125 MHz; ~1.3 mA with the core halted in a WFE/sleep_us wait
    # (clocks running, peripherals idle).
    mcu_active_w: float = 3.3 * 24e-3
    mcu_idle_w: float = 3.3 * 1.3e-3
    # AD5676 datasheet "Power requirements": I_DD 1.1 mA typ at 5 V (internal reference,
    # normal mode) per chip; a code update charges the output stage: ~1 nJ estimate.
    dac_static_w: float = 5.0 * 1.1e-3
    dac_update_j: float = 1e-9
    # ADG714 datasheet: I_DD 1 µA max at 5 V; charge injection ±3 pC at 5 V per toggle.
    sw_static_w: float = 5.0 * 1e-6
    sw_toggle_j: float = 3e-12 * 5.0
    # ADS8688 datasheet "Power dissipation": 65 mW at 500 kSPS, 10.5 mW in standby;
    # the difference spread over the 500 k conversions is the per-conversion energy.
    adc_static_w: float = 10.5e-3
    adc_conversion_j: float = (65e-3 - 10.5e-3) / 500e3
    adc_powerdown_w: float = 15e-6
    # TIA: precision op-amp (OPA4197-class, 1 mA per amplifier at ±12 V).
    tia_static_w: float = 24.0 * 1e-3
    # USB full speed link: PHY and CDC stack, ~22 nJ per payload byte (33 mW / 1.5 MB/s).
    link_byte_j: float = 22e-9


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
