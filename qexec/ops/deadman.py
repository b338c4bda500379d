"""Binance's dead-man switch (`POST /fapi/v1/countdownCancelAll`), renewed by beat for the symbols qexec trades.

With `QEXEC_DEADMAN_COUNTDOWN_S` set, beat's `qexec.deadman_renew` restarts the venue's countdown of every symbol
with a position qexec tracks or an entry order in flight, a quarter of the countdown apart. Should qexec stop
(beat, the workers, the network, Redis), the countdown runs out and the venue cancels the symbol's open orders:
resting entries do not fill behind a qexec that can no longer watch them. Whether the venue also cancels the stops
is not documented; the exit monitor re-places missing SL/TP on its first pass once qexec is back. A symbol qexec no
longer needs has its countdown ended (countdownTime 0), so it cannot cancel someone else's later orders.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from pydantic import ValidationError

from qexec import constants, logs
from qexec.config import Settings
from qexec.context import Context
from qexec.errors import VenueError
from qexec.models import Ticket
from qexec.positions import store

log = logging.getLogger(__name__)

RENEWALS_PER_COUNTDOWN = 4  # Binance's own example: renew every 30 s a countdown of 120 s
MIN_RENEW_EVERY_S = 1.0
WEIGHT_PER_CALL = 10  # per symbol and call (reference: Auto-Cancel All Open Orders)

DEADMAN_RENEWED = "DEADMAN_RENEWED"
DEADMAN_ENDED = "DEADMAN_ENDED"
DEADMAN_FAILED = "DEADMAN_FAILED"


def countdown_ms(settings: Settings) -> int:
    """The countdown sent to the venue, in ms; 0 when the switch is off."""
    return int((settings.deadman_countdown_s or 0) * 1000)


def renew_every_s(settings: Settings) -> float:
    """How often beat renews the countdowns (a quarter of the countdown, at least a second)."""
    return max(MIN_RENEW_EVERY_S, (settings.deadman_countdown_s or 0) / RENEWALS_PER_COUNTDOWN)


def symbols_in_use(r: redis.Redis, account: str = constants.DEFAULT_ACCOUNT) -> set[str]:
    """Symbols with a position qexec tracks for the account or an entry order of its placed and not yet finished
    (`qexec:inflight`)."""
    symbols = {symbol for symbol, _direction in store.tracked_keys(r, account)}
    intent_ids: Any = r.zrange(constants.INFLIGHT_KEY, 0, -1)
    if intent_ids:
        pipe = r.pipeline(transaction=False)
        for intent_id in intent_ids:
            pipe.hget(constants.ORDER_KEY.format(intent_id=intent_id), "ticket_json")
        for raw in pipe.execute():
            if not raw:
                continue
            try:
                intent = Ticket.model_validate_json(raw).intent
                if intent.account_name == account:
                    symbols.add(intent.symbol)
            except ValidationError:  # a ticket of another release: reconcile finishes it, the next pass may see it
                log.warning("dead-man switch: an in-flight ticket could not be read")
    return symbols


def renew(ctx: Context) -> dict[str, list[str]]:
    """Restart the countdown of every symbol in use and end the ones no longer in use; what was done, by outcome."""
    done: dict[str, list[str]] = {"renewed": [], "ended": [], "failed": []}
    countdown = countdown_ms(ctx.settings)
    if countdown <= 0:
        return done
    r = ctx.redis
    wanted = symbols_in_use(r, ctx.account)
    armed_key = ctx.key(constants.DEADMAN_ARMED_KEY)
    armed: Any = r.smembers(armed_key)
    for symbol in sorted(wanted):
        try:
            ctx.venue.countdown_cancel_all(symbol, countdown)
        except VenueError as exc:
            done["failed"].append(symbol)
            logs.proof(DEADMAN_FAILED, level=logging.ERROR, symbol=symbol, error=str(exc))
            continue
        r.sadd(armed_key, symbol)
        done["renewed"].append(symbol)
    for symbol in sorted(set(armed) - wanted):
        try:
            ctx.venue.countdown_cancel_all(symbol, 0)
        except VenueError as exc:
            done["failed"].append(symbol)
            logs.proof(DEADMAN_FAILED, level=logging.WARNING, symbol=symbol, error=str(exc), ending=True)
            continue
        r.srem(armed_key, symbol)
        done["ended"].append(symbol)
        logs.proof(DEADMAN_ENDED, symbol=symbol)
    if done["renewed"]:
        logs.proof(
            DEADMAN_RENEWED,
            level=logging.DEBUG,
            symbols=",".join(done["renewed"]),
            countdown_ms=countdown,
            weight=WEIGHT_PER_CALL * len(done["renewed"]),
        )
    return done
