"""Stop-loss and take-profit levels, pure arithmetic: which levels can protect a position, and the defaults."""

from __future__ import annotations

from decimal import Decimal

from qexec.context import Context
from qexec.positions.store import LONG


def level_problems(
    direction: str, stop_loss: Decimal | None, take_profit: Decimal | None, *, reference: Decimal, what: str
) -> list[str]:
    """Why levels cannot protect a position in `direction` against `reference` (empty when they can)."""
    problems = []
    long = direction == LONG
    if stop_loss is not None and (stop_loss >= reference if long else stop_loss <= reference):
        word = "below" if long else "above"
        problems.append(f"stop_loss {stop_loss} is not {word} {what} {reference} for a {direction}")
    if take_profit is not None and (take_profit <= reference if long else take_profit >= reference):
        word = "above" if long else "below"
        problems.append(f"take_profit {take_profit} is not {word} {what} {reference} for a {direction}")
    return problems


def default_levels(ctx: Context, direction: str, entry: Decimal) -> tuple[Decimal, Decimal]:
    """The settings' stop-loss and take-profit distances from `entry`."""
    sign = 1 if direction == LONG else -1
    sl_pct = Decimal(str(ctx.settings.default_stop_loss_pct)) / 100
    tp_pct = Decimal(str(ctx.settings.default_take_profit_pct)) / 100
    return entry * (1 - sign * sl_pct), entry * (1 + sign * tp_pct)


def choose_levels(
    ctx: Context,
    direction: str,
    wanted: tuple[Decimal | None, Decimal | None],
    *,
    entry: Decimal,
    mark: Decimal,
) -> tuple[Decimal, Decimal, list[str]]:
    """The levels to place: the wanted ones when valid against the entry and the mark, else the defaults."""
    defaults = default_levels(ctx, direction, entry)
    chosen: list[Decimal] = []
    notes: list[str] = []
    for index, (name, level) in enumerate((("stop_loss", wanted[0]), ("take_profit", wanted[1]))):
        if level is None:
            notes.append(f"no {name} given: the default {defaults[index]:.8g} is used")
            chosen.append(defaults[index])
            continue
        pair: tuple[Decimal | None, Decimal | None] = (level, None) if index == 0 else (None, level)
        problems = level_problems(direction, *pair, reference=entry, what="the entry")
        problems += level_problems(direction, *pair, reference=mark, what="the mark")
        if problems:
            notes.append(f"{'; '.join(problems)}: refused, the default {defaults[index]:.8g} is used")
            chosen.append(defaults[index])
        else:
            chosen.append(level)
    return chosen[0], chosen[1], notes
