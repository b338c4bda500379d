"""Request parameters as Binance reads them: strings by name, checked and converted on demand."""

from __future__ import annotations

from decimal import Decimal

from qexec.paper import errors
from qexec.paper.decimals import parse


class Params(dict[str, str]):
    """The merged query-string and body parameters of one request (the query string wins)."""

    def required(self, name: str) -> str:
        """The value of a mandatory parameter (-1102 when absent or empty)."""
        value = self.get(name)
        if not value:
            raise errors.missing(name)
        return value

    def decimal(self, name: str) -> Decimal:
        """A mandatory decimal parameter (-1102 when absent or not a number)."""
        value = parse(self.required(name))
        if value is None:
            raise errors.missing(name)
        return value

    def optional_decimal(self, name: str) -> Decimal | None:
        """An optional decimal parameter (-1102 when sent but not a number)."""
        return self.decimal(name) if self.get(name) else None

    def integer(self, name: str, default: int | None = None) -> int:
        """An integer parameter, or ``default`` when absent (-1102 when malformed or absent without default)."""
        text = self.get(name)
        if not text:
            if default is None:
                raise errors.missing(name)
            return default
        try:
            return int(text)
        except ValueError:
            raise errors.missing(name) from None

    def optional_integer(self, name: str) -> int | None:
        """An optional integer parameter."""
        return self.integer(name) if self.get(name) else None

    def flag(self, name: str, default: bool = False) -> bool:
        """A ``"true"``/``"false"`` parameter (case-insensitive, -1130 for anything else)."""
        text = self.get(name)
        if not text:
            return default
        lowered = text.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        raise errors.invalid(name)
