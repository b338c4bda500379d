"""The chain: its steps are the contract's task names, what the place step's outcome leaves out, and an intent
through the whole chain on a real worker."""

from __future__ import annotations

import pytest
from stack_fixtures import Stack, assert_result_matches_venue, order_queries, seed_intent, unique_id, wait_for_line

from qexec.models import client_order_id
from qexec.pipeline.chain import STEPS, Step, left_out
from qexec.worker.app import app


def test_the_chain_runs_the_four_contract_tasks_in_order_and_each_is_registered() -> None:
    """Names other programs rely on (DESIGN.md): place, confirm, publish, protect."""
    assert [s.value for s in STEPS] == [
        "qexec.place_order",
        "qexec.confirm_fill",
        "qexec.publish_execution",
        "qexec.protect_position",
    ]
    app.loader.import_default_modules()
    assert all(step.value in app.tasks for step in STEPS)


def test_a_result_published_by_the_place_step_leaves_confirm_and_publish_out_and_protect_only_when_done() -> None:
    assert left_out(published=False, protected=False) == frozenset()
    assert left_out(published=True, protected=False) == {Step.CONFIRM, Step.PUBLISH}
    assert left_out(published=True, protected=True) == {Step.CONFIRM, Step.PUBLISH, Step.PROTECT}


@pytest.mark.slow
def test_seed_intent_as_json_payload_is_filled_at_the_venues_own_price(stack: Stack) -> None:
    """The seed's intent as a JSON field ends `filled` with the venue's avgPrice and executedQty."""
    iid = unique_id("seed")
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    order = assert_result_matches_venue(stack, result)
    assert order["status"] == "FILLED"
    assert result["client_order_id"] == client_order_id(iid) == order["clientOrderId"]
    assert result["mode"] == "paper"


@pytest.mark.slow
def test_an_immediately_filled_market_order_needs_no_confirmation_step(stack: Stack) -> None:
    """The RESULT answer FILLED is the confirmation: one task places, publishes and protects; nothing else runs."""
    iid = unique_id("fast")
    queried = order_queries(stack.paper)
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    queried_after = order_queries(stack.paper)
    assert result["status"] == "filled", result
    assert_result_matches_venue(stack, result)
    assert queried_after == queried, "nothing asked the venue about the order"
    wait_for_line(stack.logs_dir / "worker.log", f"place_order[{iid}:place] succeeded", stack.processes["worker"], 30)
    [event] = stack.protection_events(iid)
    assert event["status"] == "placed", event
    log = stack.log("worker")
    assert f"qexec.confirm_fill[{iid}:confirm]" not in log
    assert f"qexec.publish_execution[{iid}:publish]" not in log
    assert f"qexec.protect_position[{iid}:protect]" not in log
