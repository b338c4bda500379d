"""Publishing the result (qexec/pipeline/publish.py): one result per intent, whatever a re-run concludes after it."""

from __future__ import annotations

import pytest
from position_helpers import FlatSymbol, context, intent, open_algos
from stack_fixtures import Stack, unique_id

from qexec.models import ExecutionResult, ResultStatus
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.place import place_entry
from qexec.pipeline.publish import publish
from qexec.positions import protection

pytestmark = pytest.mark.slow


def test_a_rerun_that_gives_up_after_the_fill_was_published_still_protects_the_fill(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The fill went out, then the step failed past its retries and concluded `failed`: publishing that publishes
    nothing and hands on the published fill, so protection still places the stop-loss and the take-profit."""
    ctx = context(stack.settings)
    symbol = "DOTUSDT"
    flat_symbol(ctx, symbol, "4.000")
    the_intent = intent(unique_id("gave-up"), symbol, "BUY", 60, stop_loss=3.8, take_profit=4.4)
    ticket = new_ticket(the_intent, entry_id=None)
    filled = place_entry(ticket, ctx)
    assert isinstance(filled, ExecutionResult) and filled.status is ResultStatus.FILLED, filled

    handed_on = publish(ticket.decide(ResultStatus.FAILED, "place_order failed: RuntimeError()"), ctx)
    event = protection.protect_step(handed_on.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)

    assert handed_on == filled
    assert [r["status"] for r in stack.results(the_intent.id)] == ["filled"]
    assert event["status"] == "placed", event
    assert len(open_algos(ctx, symbol)) == 2
