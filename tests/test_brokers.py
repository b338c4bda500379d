"""The pipeline on RabbitMQ: `QEXEC_BROKER_URL=amqp://…` runs the same chains; the streams stay on Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from stack_fixtures import Stack, assert_result_matches_venue, clean_env, seed_intent, stop_process, unique_id

from qexec.models import client_order_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rabbit_stack(stack: Stack, amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second worker and bridge whose Celery broker is RabbitMQ, on streams of their own."""
    suffix = uuid.uuid4().hex[:6]
    overrides = {
        "QEXEC_BROKER_URL": amqp_url,
        "QEXEC_INTENT_STREAM": f"test:amqp:{suffix}:intent",
        "QEXEC_RESULT_STREAM": f"test:amqp:{suffix}:result",
    }
    env = clean_env({**{k: v for k, v in stack.env.items() if k.startswith("QEXEC_")}, **overrides})
    settings = stack.settings.model_copy(update={k.removeprefix("QEXEC_").lower(): v for k, v in overrides.items()})
    rabbit = Stack(
        env=env,
        settings=settings,
        redis=stack.redis,
        paper=stack.paper,
        logs_dir=tmp_path_factory.mktemp("rabbit-logs"),
    )
    try:
        rabbit.start_worker()
        rabbit.start_bridge("bridge-amqp")
        yield rabbit
    finally:
        for proc in rabbit.processes.values():
            stop_process(proc)


def test_the_pipeline_fills_an_intent_with_rabbitmq_as_the_broker(rabbit_stack: Stack) -> None:
    """The seed intent goes bridge → RabbitMQ → worker → venue and ends `filled` at the venue's price."""
    iid = unique_id("amqp")
    rabbit_stack.inject(seed_intent(iid))
    result = rabbit_stack.wait_result(iid)
    assert result["status"] == "filled", result
    assert_result_matches_venue(rabbit_stack, result)
    assert "amqp://guest:**@127.0.0.1:5672" in rabbit_stack.log("worker")


def test_a_late_fill_is_polled_on_rabbitmq_too(rabbit_stack: Stack) -> None:
    """confirm_fill's sub-second countdown retries work on RabbitMQ: a fill 1.5 s late is still reported."""
    iid = unique_id("amqp-late")
    paper: Any = rabbit_stack.paper
    config = paper.admin("GET", "/paper/v1/config")
    paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": 0})
    try:
        paper.admin(
            "POST",
            "/paper/v1/faults",
            json={"kind": "fill_delay", "delay_ms": 1500, "client_order_id": client_order_id(iid), "count": 1},
        )
        rabbit_stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=300.0))
        result = rabbit_stack.wait_result(iid)
    finally:
        paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": config["result_wait_ms"]})
    assert result["status"] == "filled", result
    assert_result_matches_venue(rabbit_stack, result)
    assert any("FILL_PENDING" in line and iid in line for line in rabbit_stack.log("worker").splitlines())
