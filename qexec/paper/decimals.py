"""Decimal parsing and Binance-style formatting (decimals travel as JSON strings)."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

ZERO = Decimal(0)


def parse(text: str) -> Decimal | None:
    """The decimal in ``text``, or None when it is not a finite number."""
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def fmt(value: Decimal, places: int) -> str:
    """``value`` printed with exactly ``places`` decimals, as Binance prints prices and quantities."""
    return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"


def plain(value: Decimal) -> str:
    """``value`` without exponent or trailing zeros (``"0"`` for zero)."""
    if value == 0:
        return "0"
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def places_of(value: Decimal) -> int:
    """Number of decimals written in ``value`` (``1.50`` has 2)."""
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded down to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def round_to(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded to the nearest multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_HALF_UP) * step
