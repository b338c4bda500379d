"""Celery tasks: thin wrappers that run the execution steps with this worker's venue and Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task, chain
from celery.exceptions import Reject, Retry

from qexec import alerts, logs, redis_streams
from qexec.config import get_settings
from qexec.context import Context, Pending, each_account
from qexec.errors import IntentError, RateLimited, TemporaryVenueError, UnknownAccount
from qexec.models import ExecutionResult, Intent, ResultStatus, Ticket
from qexec.ops import deadman, halt, notify, selftest
from qexec.pipeline import admission, bridge, confirm, fill_events, order_record, place, publish, reconcile
from qexec.pipeline import chain as chain_shape
from qexec.positions import monitor, protection, store
from qexec.venue.binance import BinanceVenue
from qexec.worker import takeover
from qexec.worker.app import REPR_MAXSIZE, app
from qexec.worker.celeryconf import redis_broker
from qexec.worker.runtime import context, contexts, qexec_redis

log = logging.getLogger(__name__)

# Unexpected exceptions (bugs, a Redis blip) are retried this many times before the intent fails.
UNEXPECTED_RETRIES = 3
BROKER_WAIT_STEP_S = 0.5  # how often a step whose retry could not be sent tries again
# The chain's steps retry on their own terms (never give up on their own); their results print short.
STEP_OPTIONS: dict[str, Any] = {"bind": True, "max_retries": None, "resultrepr_maxsize": REPR_MAXSIZE}

Step = Callable[[Ticket, Context, int], Ticket | ExecutionResult]


def again(task: Task, countdown_s: float, errors: int) -> Retry:
    """The task's retry, sent to the broker; while the broker is away (a Redis restart), wait here for it rather than
    let the message wait out the visibility timeout (minutes) - or be dropped: Celery rejects a task whose retry it
    cannot send. Returns the `Retry` to raise."""
    deadline = time.monotonic() + get_settings().broker_wait_s
    while True:
        try:
            sent: Retry = task.retry(countdown=countdown_s, max_retries=None, kwargs={"errors": errors}, throw=False)
        except Reject as exc:
            if time.monotonic() >= deadline:
                raise  # still away: the broker redelivers the unacked message after its visibility timeout
            log.warning("%s: the broker is unavailable (%s); waiting to send the retry", task.name, exc.reason)
            time.sleep(BROKER_WAIT_STEP_S)
            continue
        return sent


def _run(
    task: Task, step: Step, ticket_data: dict[str, Any], errors: int, *, watched: bool = False
) -> Ticket | ExecutionResult:
    """Run a step; `watched`: a confirmation, whose next attempt is expected in Redis (beat's takeover sends a fresh
    one should its message be lost)."""
    ticket = Ticket.model_validate(ticket_data)
    try:
        ctx = _context_of(ticket)
        out = step(ticket, ctx, task.request.retries)
    except UnknownAccount as exc:
        raise _wait_for_account(task, ticket, exc, errors) from None
    except Pending as pending:
        # Capped: a countdown longer than the visibility timeout allows would be redelivered while still held.
        countdown_s = min(pending.countdown_s, get_settings().retry_countdown_max_s)
        if watched:
            _expect_again(ticket, countdown_s)
        raise again(task, countdown_s, errors) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis away is waited out, never counted as a failure: giving up could report a placed order as failed.
        log.warning("%s for intent %s: Redis unavailable (%s); retrying", task.name, ticket.intent_id, exc)
        raise again(task, min(1.0, get_settings().retry_countdown_max_s), errors) from exc
    except Exception as exc:
        log.exception("%s failed for intent %s", task.name, ticket.intent_id)
        logs.proof(
            logs.ORDER_ERROR,
            level=logging.ERROR,
            step=task.name,
            error=repr(exc),
            intent_id=ticket.intent_id,
            entry_id=ticket.entry_id,
            attempt=errors + 1,
        )
        if errors < UNEXPECTED_RETRIES:
            countdown_s = min(2.0**errors, get_settings().retry_countdown_max_s)
            raise again(task, countdown_s, errors + 1) from exc
        out = ticket.decide(ResultStatus.FAILED, f"{task.name} failed: {exc!r}")
    return out


def _context_of(ticket: Ticket | dict[str, Any]) -> Context:
    """The context of a ticket's account. An intent that has placed nothing yet may run with `default`'s when its
    account is unknown here (place_order rejects it); anything further raises UnknownAccount."""
    own = ticket if isinstance(ticket, Ticket) else Ticket.model_validate(ticket)
    return context(own.intent.account_name, or_default=own.order is None and own.placed_at is None)


def _protect_context(result: dict[str, Any], ticket: dict[str, Any]) -> Context:
    """The context protecting an entry runs with: its account's; `default`'s only for a result with no position to
    protect (an unknown account's rejection: protection only clears what place_order registered)."""
    own = Ticket.model_validate(ticket)
    positioned = ("filled", "partially_filled", "protection_updated")
    return context(own.intent.account_name, or_default=result.get("status") not in positioned)


def _wait_for_account(task: Task, ticket: Ticket, exc: UnknownAccount, errors: int) -> Retry:
    """A step of an account this worker does not know: said at ERROR, and tried again (by this or another worker)
    without counting as a failure - never done with another account's settings, never failed for it."""
    log.error("ACCOUNT_UNKNOWN step=%s intent_id=%s %s", task.name, ticket.intent_id, exc)
    return again(task, get_settings().retry_countdown_max_s, errors)


def _expect_again(ticket: Ticket, countdown_s: float) -> None:
    try:
        order_record.expect_confirmation(qexec_redis(), ticket.intent_id, get_settings(), countdown_s)
    except redis.RedisError as exc:  # the attempt is overdue then, and beat's takeover sends one more: harmless
        log.warning("could not record intent %s's next confirmation (%s)", ticket.intent_id, exc)


def _publish(task: Task, ticket: Ticket, errors: int) -> dict[str, Any]:
    """Publish a finished ticket's result (retrying the task when Redis refuses); the result as JSON."""
    try:
        result = publish.publish(ticket, _context_of(ticket), task.request.retries)
    except UnknownAccount as exc:
        raise _wait_for_account(task, ticket, exc, errors) from None
    except Exception as exc:
        log.exception("publishing failed for intent %s", ticket.intent_id)
        countdown_s = min(2.0**errors, get_settings().retry_countdown_max_s)
        raise again(task, countdown_s, errors + 1) from exc
    return dict(result.model_dump(mode="json"))


def _skip_steps(task: Task, steps: frozenset[chain_shape.Step]) -> None:
    """Drop steps from the rest of this task's chain (Celery sends `request.chain[-1]` next, after we return)."""
    rest = task.request.chain
    if rest:
        task.request.chain = [step for step in rest if step.get("task") not in steps]


def _finish_here(task: Task, result: dict[str, Any], ticket: dict[str, Any]) -> None:
    """After place_order published the result: protect in this task when it can, else leave it to the chain.

    One task per intent instead of two on the fast path (a Celery task costs the worker more CPU than the
    protection itself). Protection is idempotent, so a place_order that dies here and is redelivered, or a
    `protect_position` that runs after a half-done attempt, places nothing twice.
    """
    _skip_steps(task, chain_shape.left_out(published=True, protected=False))
    try:
        protection.protect_step(result, ticket, _protect_context(result, ticket))
    except store.PositionBusy:
        log.info("position of intent %s busy: protect_position protects it", result.get("intent_id"))
        return
    except TemporaryVenueError as exc:
        log.info("protecting intent %s waits (%s): protect_position protects it", result.get("intent_id"), exc)
        return
    except Exception:
        log.exception("protecting intent %s in place_order failed: protect_position retries", result.get("intent_id"))
        return
    _skip_steps(task, chain_shape.left_out(published=True, protected=True))


@app.task(name=chain_shape.Step.PLACE.value, **STEP_OPTIONS)
def place_order(self: Task, ticket: dict[str, Any], errors: int = 0) -> dict[str, Any]:
    """Place the intent's entry order once (adopting an earlier submit); publish at once when the answer is final.

    A `RESULT` answer that is already terminal (a filled MARKET order), or a decision without an order (a
    rejection, a policy's verdict), needs no confirmation: the result goes out from here, the position is
    protected from here too, and the chain's `confirm_fill`, `publish_execution` and `protect_position` are
    skipped (`protect_position` still runs when protecting here could not finish).
    """
    placed = _run(self, place.place_entry, ticket, errors)
    if isinstance(placed, ExecutionResult):  # published already: the venue's answer was final
        result = dict(placed.model_dump(mode="json"))
    elif not confirm.finished(placed):
        fill_events.wait_for(placed)  # its final event publishes it, unless confirm_fill comes first
        return dict(placed.model_dump(mode="json"))
    else:
        result = _publish(self, placed, errors)  # a verdict: no order went out
    _finish_here(self, result, ticket)
    return result


@app.task(name=chain_shape.Step.CONFIRM.value, **STEP_OPTIONS)
def confirm_fill(self: Task, ticket: dict[str, Any], errors: int = 0) -> dict[str, Any]:
    """Wait with a growing countdown until the order is filled, terminal, or canceled at the deadline.

    When the order's final event has published the result already (qexec/pipeline/fill_events.py), the venue is not
    asked, `publish_execution` is skipped, and so is `protect_position` once the event's protection is out.
    """
    try:
        out = _run(self, confirm.confirm_step, ticket, errors, watched=True)
    except Retry:
        fill_events.wait_for(Ticket.model_validate(ticket))  # the retry may run in another process: this one listens
        raise
    if isinstance(out, ExecutionResult):
        try:
            protected = fill_events.protected(context(), out.intent_id)
        except redis.RedisError:
            protected = False  # protect_position runs: protecting again places nothing twice
        _skip_steps(self, chain_shape.left_out(published=True, protected=protected))
    return dict(out.model_dump(mode="json"))


@app.task(name=chain_shape.Step.PUBLISH.value, **STEP_OPTIONS)
def publish_execution(self: Task, ticket: dict[str, Any], errors: int = 0) -> dict[str, Any]:
    """Publish the intent's one terminal result to the result stream."""
    done = Ticket.model_validate(ticket)
    result = _publish(self, done, errors)
    fill_events.forget(done)
    return result


def start_chain(ticket: Ticket, steps: tuple[chain_shape.Step, ...] = chain_shape.STEPS) -> None:
    """Enqueue place → confirm → publish → protect for a ticket (or the last `steps` of it), with task ids derived
    from the intent id."""
    data = ticket.model_dump(mode="json")
    iid = ticket.intent_id
    # The arguments' printable form (logs, Flower) names the intent, instead of Celery printing the ticket per send.
    shown = {"argsrepr": f"(<ticket {iid} {ticket.intent.symbol} {ticket.intent.side.value}>)", "kwargsrepr": "{}"}
    first = {steps[0]: (data,), chain_shape.Step.PROTECT: (data,)}  # the others take the step before's output
    tasks = {t.name: t for t in (place_order, confirm_fill, publish_execution, protect_position)}
    chain(
        *(tasks[step].s(*first.get(step, ())).set(task_id=f"{iid}:{step.suffix}", **shown) for step in steps)
    ).apply_async()


@app.task(name=chain_shape.Step.PROTECT.value, **STEP_OPTIONS)
def protect_position(self: Task, result: dict[str, Any], ticket: dict[str, Any], errors: int = 0) -> dict[str, Any]:
    """Place the filled position's stop-loss and take-profit (algo orders), then publish a `protection` event."""
    try:
        return protection.protect_step(result, ticket, _protect_context(result, ticket))
    except UnknownAccount as exc:
        raise _wait_for_account(self, Ticket.model_validate(ticket), exc, errors) from None
    except store.PositionBusy:
        raise again(self, 0.5, errors) from None
    except TemporaryVenueError as exc:  # the venue, or the shared budget, says later: not a failure of the step
        wait_s = exc.retry_after_s if isinstance(exc, RateLimited) else min(2.0**errors, 5.0)
        log.warning("protecting the position of intent %s waits %.1f s: %s", result.get("intent_id"), wait_s, exc)
        raise again(self, min(wait_s, get_settings().retry_countdown_max_s), errors) from None
    except Exception as exc:
        log.exception("protecting the position of intent %s failed", result.get("intent_id"))
        if errors >= UNEXPECTED_RETRIES:
            raise  # the exit monitor adopts and protects what is still unprotected
        countdown_s = min(2.0**errors, get_settings().retry_countdown_max_s)
        raise again(self, countdown_s, errors + 1) from exc


@app.task(name="qexec.watch_positions", ignore_result=True)
def watch_positions() -> dict[str, list[str]]:
    """Beat: the exit monitor (reconcile, repair protection, trail stops, report exits)."""
    try:
        return monitor.watch_all(contexts())
    finally:
        alerts.raise_lasting_unprotected(qexec_redis(), get_settings())  # POSITION_UNPROTECTED again, while it lasts


@app.task(name=alerts.SEND_TASK, bind=True, ignore_result=True, max_retries=notify.SEND_RETRIES)
def send_alert(self: Task, alert: dict[str, Any], destinations: list[str] | None = None) -> list[str]:
    """Deliver one alert to every destination of QEXEC_ALERT_URLS (those of `destinations`, by id, on a retry);
    the ones that failed are retried with a growing countdown, then given up (logged and counted)."""
    r, settings = qexec_redis(), get_settings()
    left = notify.deliver(r, settings, alert, destinations)
    if left and self.request.retries < notify.SEND_RETRIES:
        countdown_s = notify.backoff_s(self.request.retries)
        raise self.retry(countdown=countdown_s, kwargs={"alert": alert, "destinations": left})
    if left:
        notify.gave_up(r, settings, alert, left)
    return left


@app.task(name=takeover.TASK, ignore_result=True)
def take_over() -> dict[str, int]:
    """Beat: queue again, at once, the broker messages of worker nodes that stopped beating (a Redis broker); and
    dispatch again each intent whose place_order never started, and send a fresh confirmation for each order whose
    next confirm_fill is overdue (their messages lost with a worker)."""
    settings = get_settings()
    taken: dict[str, int] = {}
    if redis_broker(settings):
        with app.connection_for_write() as connection:
            taken = takeover.sweep(connection.default_channel, qexec_redis(), settings)
    ctx = context()
    for ticket in reconcile.overdue_placements(ctx):
        start_chain(ticket)
    for ticket in reconcile.overdue_confirmations(ctx):
        start_chain(ticket, chain_shape.RESUMED)
    return taken


@app.task(name="qexec.reclaim_intents", ignore_result=True)
def reclaim_intents() -> int:
    """Beat: reclaim intent entries a dead bridge left pending."""
    return bridge.reclaim_intents(context(), start_chain)


@app.task(name="qexec.reconcile_orders", ignore_result=True)
def reconcile_orders() -> list[str]:
    """Beat: finish orders whose chain died after placing them (confirm or cancel, then publish)."""
    return reconcile.reconcile_orders(context(), context_of=context)


@app.task(name="qexec.venue_heartbeat", ignore_result=True)
def venue_heartbeat() -> dict[str, Any]:
    """Beat: the venue self-test, recorded where `qexec status` reads it."""
    return selftest.venue_heartbeat(*contexts())  # every account's keys, the first (default's) report kept


@app.task(name="qexec.deadman_renew", ignore_result=True)
def deadman_renew() -> dict[str, list[str]]:
    """Beat: renew the venue's dead-man countdown of every symbol qexec trades (QEXEC_DEADMAN_COUNTDOWN_S)."""
    return each_account(contexts(), deadman.renew, deadman.DEADMAN_FAILED)


def _where(task: Task) -> str:
    """Who sent the task (the caller's node, `celery call` included) and which worker runs it, for the log."""
    return f"{task.request.origin or '?'}->{task.request.hostname or '?'}"


@app.task(name="qexec.halt", bind=True)
def halt_task(self: Task, reason: str = "", flatten: bool = False, by: str = "", account: str = "") -> dict[str, Any]:
    """The kill switch from Celery (`celery call qexec.halt --kwargs '{"reason": …, "flatten": false, "by": …}'`):
    every new intent (of `account`, when given) is rejected until `qexec.resume`; `flatten` also closes everything
    (of that account) at the venue."""
    halt.check_account(get_settings(), account or None)
    record = halt.halt(
        qexec_redis(), reason=reason, flatten=flatten, by=by or None, where=_where(self), account=account or None
    )
    if flatten:
        settings = get_settings()
        halt.wait_for_placements(qexec_redis(), settings.entry_wait_s)
        names = [account] if account else list(settings.account_names)
        done = halt.flatten_accounts(settings, names, lambda own: BinanceVenue(own, qexec_redis()))
        record["accounts"] = {name: flattened.summary() for name, flattened in done.items()}
        record["flat"] = all(flattened.flat for flattened in done.values())
    return record


@app.task(name="qexec.resume", bind=True)
def resume_task(self: Task, by: str = "", account: str = "") -> dict[str, Any]:
    """Lift the kill switch from Celery (`celery call qexec.resume --kwargs '{"by": …}'`; `account`: that account's
    own halt)."""
    halt.check_account(get_settings(), account or None)
    resumed = halt.resume(qexec_redis(), by=by or None, where=_where(self), account=account or None)
    if not resumed:
        log.info("qexec.resume by=%s where=%s: no halt was in force", by or "?", _where(self))
    return {"resumed": resumed}


def _submitted(args: tuple[Any, ...], fields: dict[str, Any], *, default_id: str, max_bytes: int) -> Intent:
    if args:
        raise IntentError(
            "qexec.submit_intent takes the intent's fields as keyword arguments (celery call -k/--kwargs "
            f"'{{...}}'), not {len(args)} positional one(s) (-a/--args)"
        )
    return Intent.from_fields(fields, default_id=default_id, max_bytes=max_bytes)


@app.task(name="qexec.submit_intent", bind=True, throws=(IntentError,))
def submit_intent(self: Task, *args: Any, **fields: Any) -> dict[str, Any]:
    """Validate one intent given as keyword arguments and start its chain (`celery call` entry point).

    A refused intent is dead-lettered with its values as given, logged at ERROR with the task id, and the task
    fails with the reason (its state in Flower, or for a caller that waits on it).
    """
    settings = get_settings()
    r = qexec_redis()
    task_id = str(self.request.id)
    try:
        intent = _submitted(args, fields, default_id=task_id, max_bytes=settings.max_intent_bytes)
        intents = admission.per_account(intent, settings)  # every account's intent valid, before anything starts
    except IntentError as exc:
        given = dict(fields, args=list(args)) if args else fields
        dlq_id = redis_streams.dead_letter(
            r, settings, error=str(exc), fields=given, entry_id=None, source=f"task:{task_id}"
        )
        logs.proof(logs.INTENT_DEAD_LETTER, level=logging.ERROR, error=str(exc), task_id=task_id, dlq_id=dlq_id)
        raise IntentError(f"{exc} (dead-lettered as {dlq_id})") from None
    dispatched = admission.admit(intents, entry_id=None, owner=task_id, r=r, settings=settings, dispatch=start_chain)
    answer: dict[str, Any] = {"status": "dispatched" if dispatched else "duplicate", "intent_id": intent.id}
    if intent.accounts is not None:  # a fan-out: each account's intent has its own id, and its own result
        answer["intent_ids"] = [one.id for one in intents]
    return answer
