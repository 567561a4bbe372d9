"""Quantities as a lab writes them: ``2.1 um``, ``2,1 µm``, a bare number under a header
``Voltage (V)``, converted to the unit the campaign spec states (with ``pint``).

A spec unit pint does not know (a lab's own shorthand) still works: values then carry no
unit, or exactly that unit string. Pint is imported on first use only (it takes a
noticeable fraction of a second), so reading a plain sheet never pays for it.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from .errors import FabError

NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")
WITH_UNIT = re.compile(
    r"\s*(?P<number>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*(?P<unit>[^\d\s.,+-].*?)\s*"
)
DECIMAL_COMMA = re.compile(r"\s*[-+]?\d+,\d+([eE][-+]?\d+)?(\s.*)?")
HEADER_UNIT = re.compile(r"^(?P<name>.*?)\s*[(\[](?P<unit>[^()\[\]]*)[)\]]\s*$")


class UnitError(FabError):
    """A quantity whose unit is unknown or of the wrong dimension."""


@functools.cache
def registry() -> Any:
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def split_header(header: str) -> tuple[str, str]:
    """``'Voltage (V)'`` -> ``('Voltage', 'V')``; ``'bt_time [s]'`` -> ``('bt_time', 's')``."""
    match = HEADER_UNIT.match(header)
    if not match:
        return header.strip(), ""
    return match["name"].strip(), match["unit"].strip()


def decimal_point(text: str) -> str:
    """``'2,1'`` or ``'2,1 um'`` (a decimal comma) -> ``'2.1'``/``'2.1 um'``; else as is."""
    return text.replace(",", ".", 1) if DECIMAL_COMMA.fullmatch(text) else text


def convert(value: Any, unit: str, to: str, where: str) -> float:
    """``value`` (a number, or text with or without a unit) in the unit ``to``. ``unit``
    is the unit a bare number carries (from the column header; empty: already ``to``)."""
    if not isinstance(value, str):
        number = float(value)
        return number if not unit or unit == to else _to(number, unit, to, where)
    text = value.strip()
    if NUMBER.fullmatch(text):
        number = float(text)
        return number if not unit or unit == to else _to(number, unit, to, where)
    match = WITH_UNIT.fullmatch(text)
    if not match:
        raise UnitError(f"{where}: {value!r} is not a number")
    number, given = float(match["number"]), match["unit"]
    if given == to:
        return number
    if not to:
        raise UnitError(f"{where}: {value!r} has a unit, but the spec gives this column none")
    return _to(number, given, to, where)


def _to(number: float, unit: str, to: str, where: str) -> float:
    import pint

    ureg = registry()
    try:
        quantity = ureg.Quantity(number, _pint_unit(unit))
        target = _pint_unit(to)
        out = float(quantity.to(target).magnitude)
    except pint.DimensionalityError:
        raise UnitError(f"{where}: {number:g} {unit} cannot be converted to {to}") from None
    except (pint.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, ValueError):
        raise UnitError(
            f"{where}: unit {unit!r} (or the spec's {to!r}) is not a unit xbar knows"
        ) from None
    if not math.isfinite(out):
        raise UnitError(f"{where}: {number:g} {unit} is not finite in {to}")
    return float(f"{out:.12g}")  # 4060 nm is 4.06 um, not 4.0600000000000005


def _pint_unit(unit: str) -> str:
    # "µm"/"μm" and "um" are all micrometres; "C" alone would be coulomb, so degrees are
    # spelt degC (°C is accepted too).
    return unit.replace("µ", "u").replace("μ", "u").replace("°C", "degC").replace("°", "deg")
