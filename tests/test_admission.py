"""Admission through the real bridge and worker: an intent id is dispatched once, whatever enters it twice."""

from __future__ import annotations

import time

import pytest
from stack_fixtures import Stack, seed_intent, unique_id, venue_orders

pytestmark = pytest.mark.slow


def test_the_same_intent_injected_twice_places_one_order_and_publishes_one_result(stack: Stack) -> None:
    """A second entry with the same intent id is dropped as a duplicate: one order, one result."""
    iid = unique_id("dup")
    stack.inject(seed_intent(iid))
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled"
    time.sleep(1.0)  # give a wrongly dispatched second chain time to show itself
    assert len(venue_orders(stack, iid)) == 1
    assert len(stack.results(iid)) == 1
    assert "INTENT_DUPLICATE" in stack.log("bridge")
