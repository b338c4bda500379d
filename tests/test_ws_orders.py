"""The WebSocket order path (`QEXEC_ORDER_TRANSPORT=ws`) and Ed25519 keys: orders, look-ups, cancels and SL/TP over
the venue's WebSocket API through python-binance, REST when it cannot be reached, and an answer that never came
looked up by client id before anything is sent again; against the paper exchange's `/ws-fapi/v1`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from paper_fixtures import PaperExchange, free_port, start_paper
from pydantic import ValidationError
from stack_fixtures import PIPELINE_ENV, Stack, seed_intent, stack_on, unique_id, venue_orders

from qexec.config import Settings, settings_problem
from qexec.errors import RateLimited, UnknownOutcome
from qexec.models import OrderStatus, OrderType, Side, client_order_id
from qexec.ops.redisserver import LocalRedis
from qexec.venue.binance import BinanceVenue

ED_KEY = "qexec-ed25519-test-key"


def ed25519_files(folder: Path, password: bytes | None = None) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair as PEM files: (private, public)."""
    key = ed25519.Ed25519PrivateKey.generate()
    crypt = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    private = folder / f"ed25519-{time.monotonic_ns()}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt))
    public = private.with_suffix(".pub.pem")
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def ws_requests(paper: PaperExchange, method: str) -> int:
    """How many WebSocket API requests of `method` the exchange has served."""
    return int(paper.stats()["requests"].get(f"WS {method}", 0))


def rest_requests(paper: PaperExchange, endpoint: str) -> int:
    return int(paper.stats()["requests"].get(endpoint, 0))


def market_buy(venue: BinanceVenue, cid: str, symbol: str = "BTCUSDT") -> Any:
    return venue.place_order(
        symbol=symbol, side=Side.BUY, order_type=OrderType.MARKET, quantity=Decimal("0.002"), client_order_id=cid
    )


# -- keys ---------------------------------------------------------------------------------------------------------


def test_an_ed25519_key_is_read_at_start_and_a_bad_one_is_named_without_showing_it(tmp_path: Path) -> None:
    private, _public = ed25519_files(tmp_path)
    locked, _ = ed25519_files(tmp_path, password=b"pw-123")
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    good = Settings(api_key=ED_KEY, api_private_key_file=private)
    also = Settings(api_key=ED_KEY, api_private_key=private.read_text(), api_private_key_password=None)
    unlocked = Settings(api_key=ED_KEY, api_private_key_file=locked, api_private_key_password="pw-123")
    assert good.credentials().private_key == also.credentials().private_key == private.read_text()
    assert unlocked.credentials().private_key and unlocked.credentials().secret is None
    body = private.read_text().splitlines()[1]
    assert body in good.log_secrets() and ED_KEY in good.log_secrets()
    assert body not in repr(good) and body not in repr(good.credentials())

    refusals = {
        "not Ed25519": dict(api_private_key_file=rsa_key),
        "cannot be read": dict(api_private_key_file=tmp_path / "missing.pem"),
        "password is wrong": dict(api_private_key_file=locked, api_private_key_password="nope"),
        "could not be read": dict(api_private_key_file=locked),
        "not both": dict(api_private_key_file=private, api_secret="s" * 64),
    }
    for why, change in refusals.items():
        with pytest.raises(ValidationError) as caught:
            Settings(api_key=ED_KEY, **change)
        line = settings_problem(caught.value)
        assert why in line, line
        assert body not in line and "pw-123" not in line
    with pytest.raises(ValidationError):
        Settings(api_private_key_file=private)  # a private key without its API key


def test_the_websocket_api_url_follows_the_venue_and_may_not_point_elsewhere() -> None:
    assert Settings().ws_api_base_url == "ws://127.0.0.1:8800/ws-fapi/v1"
    testnet = Settings(mode="testnet", api_key="k", api_secret="s")
    assert testnet.ws_api_base_url == "wss://testnet.binancefuture.com/ws-fapi/v1"
    with pytest.raises(ValidationError, match="QEXEC_WS_API_URL"):
        Settings(ws_api_url="wss://ws-fapi.binance.com/ws-fapi/v1")  # paper orders, mainnet's WebSocket API


# -- the venue seam over the WebSocket API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ed_paper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PaperExchange, Path]]:
    """A paper exchange that also knows an Ed25519 key (its private key file beside it)."""
    private, public = ed25519_files(tmp_path_factory.mktemp("keys"))
    paper = start_paper("--tick-ms", "0", "--result-wait-ms", "0", "--ed25519-key", f"{ED_KEY}:{public}")
    try:
        yield paper, private
    finally:
        paper.stop()


def ws_venue(paper: PaperExchange, **change: Any) -> BinanceVenue:
    return BinanceVenue(Settings(exchange_url=paper.url, order_transport="ws", request_timeout_s=2, **change))


@pytest.mark.parametrize("signer", ["hmac", "ed25519"])
def test_an_order_its_lookup_and_its_cancel_go_over_the_websocket_api(
    ed_paper: tuple[PaperExchange, Path], signer: str
) -> None:
    paper, private = ed_paper
    keys = dict(api_key=ED_KEY, api_private_key_file=private) if signer == "ed25519" else {}
    venue = ws_venue(paper, **keys)
    before = {m: ws_requests(paper, m) for m in ("order.place", "order.status", "order.cancel")}
    rest_before = rest_requests(paper, "POST /fapi/v1/order")
    cid = f"ws-{signer}-{unique_id()}"[:36]

    filled = market_buy(venue, cid)
    found = venue.get_order("BTCUSDT", client_order_id=cid)
    resting = venue.place_order(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.005"),
        price=Decimal(int(venue.mark_price("BTCUSDT") * Decimal("0.8"))),  # rests, notional above 100
        client_order_id=cid + "L",
    )
    cancelled = venue.cancel_order("BTCUSDT", order_id=resting.orderId)

    assert filled.status is OrderStatus.FILLED and found.orderId == filled.orderId
    assert cancelled.status is OrderStatus.CANCELED
    assert [ws_requests(paper, m) - before[m] for m in before] == [2, 1, 1]
    assert rest_requests(paper, "POST /fapi/v1/order") == rest_before, "no order went over REST"


def test_an_ed25519_key_signs_rest_too(ed_paper: tuple[PaperExchange, Path]) -> None:
    paper, private = ed_paper
    venue = BinanceVenue(Settings(exchange_url=paper.url, api_key=ED_KEY, api_private_key_file=private))
    before = rest_requests(paper, "POST /fapi/v1/order")
    order = market_buy(venue, f"rest-ed-{unique_id()}"[:36])
    assert order.status is OrderStatus.FILLED
    assert rest_requests(paper, "POST /fapi/v1/order") == before + 1


def test_orders_go_over_rest_while_the_websocket_api_cannot_be_reached(
    ed_paper: tuple[PaperExchange, Path], caplog: pytest.LogCaptureFixture
) -> None:
    paper, _ = ed_paper
    venue = ws_venue(paper, ws_api_url=f"ws://127.0.0.1:{free_port()}/ws-fapi/v1")
    before = rest_requests(paper, "POST /fapi/v1/order")
    first = market_buy(venue, f"fallback-{unique_id()}"[:36])
    second = market_buy(venue, f"fallback-{unique_id()}"[:36])  # within QEXEC_WS_RETRY_S: REST without a try
    assert first.status is second.status is OrderStatus.FILLED
    assert rest_requests(paper, "POST /fapi/v1/order") == before + 2
    assert len([r for r in caplog.records if "WS_API_UNREACHABLE" in r.getMessage()]) == 1


def test_a_429_over_the_websocket_api_is_rate_limited_with_the_venues_wait(
    ed_paper: tuple[PaperExchange, Path],
) -> None:
    """The venue's order limit answered over the WebSocket API is a rate limit with its retry-after, as over REST (a
    WebSocket answer has no headers to read it from)."""
    paper, _ = ed_paper
    venue = ws_venue(paper)
    before, rest_before = ws_requests(paper, "order.place"), rest_requests(paper, "POST /fapi/v1/order")
    paper.admin("POST", "/paper/v1/config", {"limits": {"orders_per_10s": 2}})
    sent = 0
    try:
        with pytest.raises(RateLimited) as caught:
            # Earlier tests' orders may still be in the 10 s window: the refusal comes at the 3rd order at the latest.
            for _ in range(3):
                sent += 1
                market_buy(venue, f"limit-{unique_id()}"[:36])
    finally:
        paper.admin("POST", "/paper/v1/config", {"limits": {"orders_per_10s": 300}})
    assert caught.value.http_status == 429
    over_ws = ws_requests(paper, "order.place") - before
    assert (over_ws, rest_requests(paper, "POST /fapi/v1/order")) == (sent, rest_before), "each went over the ws API"
    assert 1 <= caught.value.retry_after_s <= 11, caught.value.retry_after_s


def test_orders_another_client_sent_are_learnt_from_the_websocket_api_s_answer(
    ed_paper: tuple[PaperExchange, Path], redis_client: redis.Redis
) -> None:
    """Another client of the account sends 12 orders over REST; qexec's next order, over the WebSocket API, reads the
    venue's counts in its answer's `rateLimits` and counts them in the shared budget (as REST's `X-MBX-*` headers do),
    so the workers do not spend what the venue has already counted."""
    paper, _ = ed_paper
    venue = BinanceVenue(
        Settings(exchange_url=paper.url, order_transport="ws", request_timeout_s=2, orders_per_min=20), redis_client
    )
    outsider = paper.client()
    for _ in range(12):
        outsider.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    before = ws_requests(paper, "order.place")
    market_buy(venue, f"counted-{unique_id()}"[:36])
    assert ws_requests(paper, "order.place") == before + 1
    assert venue.limiter is not None
    assert venue.limiter.used()["orders-1m"] >= 13


@pytest.mark.parametrize("kind", ["timeout", "drop"])
def test_an_order_whose_websocket_answer_never_came_is_an_unknown_outcome_found_by_client_id(
    ed_paper: tuple[PaperExchange, Path], kind: str
) -> None:
    """The venue executes the order and its answer never comes (or the connection drops with it in flight): the
    submit is an unknown outcome, not a failure and not a resend; the look-up by client id finds the one order."""
    paper, _ = ed_paper
    venue = ws_venue(paper)
    cid = f"lost-{kind}-{unique_id()}"[:36]
    paper.add_fault(kind=kind, endpoint="WS order.place", client_order_id=cid, executed=True)
    started = time.monotonic()
    with pytest.raises(UnknownOutcome):
        market_buy(venue, cid)
    waited_s = time.monotonic() - started
    found = venue.get_order("BTCUSDT", client_order_id=cid)
    assert found.status is OrderStatus.FILLED
    assert len(paper.orders(clientOrderId=cid)) == 1
    if kind == "drop":
        assert waited_s < 1.5, f"a dropped connection is known at once, not after the 2 s timeout ({waited_s:.2f} s)"


# -- the pipeline over the WebSocket API ------------------------------------------------------------------------------


def ws_env(private: Path) -> dict[str, str]:
    """The pipeline's test settings, orders over the WebSocket API signed with the Ed25519 key in `private`."""
    return dict(
        PIPELINE_ENV,
        QEXEC_ORDER_TRANSPORT="ws",
        QEXEC_API_KEY=ED_KEY,
        QEXEC_API_PRIVATE_KEY_FILE=str(private),
        QEXEC_UNKNOWN_LOOKUP_S="10",
    )


@pytest.fixture(scope="module")
def ws_stack(ed_paper: tuple[PaperExchange, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker and a bridge whose orders go over the WebSocket API, signed with the Ed25519 key."""
    paper, private = ed_paper
    folder = tmp_path_factory.mktemp("ws-stack")
    server = LocalRedis(port=free_port(), data_dir=folder / "redis").start()
    with stack_on(server, paper, folder / "logs", ws_env(private)) as stack:
        stack.start_worker()
        stack.start_bridge()
        yield stack


def test_the_pipeline_places_the_entry_and_its_sl_tp_over_the_websocket_api(ws_stack: Stack) -> None:
    stack = ws_stack
    before = {m: ws_requests(stack.paper, m) for m in ("order.place", "algoOrder.place")}
    rest_before = rest_requests(stack.paper, "POST /fapi/v1/order")
    iid = unique_id("ws")
    stack.inject(seed_intent(iid, symbol="ETHUSDT", position_size_usd=100.0))
    result = stack.wait_result(iid)
    deadline = time.monotonic() + 10
    while not stack.protection_events(iid) and time.monotonic() < deadline:
        time.sleep(0.05)
    [protection] = stack.protection_events(iid)

    assert result["status"] == "filled", result
    assert protection["status"] == "placed", protection
    assert ws_requests(stack.paper, "order.place") - before["order.place"] == 1
    assert ws_requests(stack.paper, "algoOrder.place") - before["algoOrder.place"] == 2
    assert rest_requests(stack.paper, "POST /fapi/v1/order") == rest_before
    assert ED_KEY not in stack.log("worker")


def test_an_entry_whose_websocket_answer_is_lost_ends_filled_with_one_order_at_the_venue(ws_stack: Stack) -> None:
    stack = ws_stack
    iid = unique_id("wslost")
    stack.paper.add_fault(kind="timeout", endpoint="WS order.place", client_order_id=client_order_id(iid))
    stack.inject(seed_intent(iid, symbol="ETHUSDT", position_size_usd=100.0))
    result = stack.wait_result(iid, timeout_s=30)
    assert result["status"] == "filled", result
    assert len(venue_orders(stack, iid)) == 1
    assert len(stack.results(iid)) == 1
    [lost] = [line for line in stack.log("worker").splitlines() if "ORDER_ERROR" in line and iid in line]
    assert "outcome=unknown" in lost and "answer never came" in lost, lost


def test_orders_go_over_a_fresh_websocket_connection_after_the_venue_restarts(
    tmp_path: Path, start_paper_server: Any
) -> None:
    """The venue goes away under a running worker (its WebSocket API connection closed) and comes back: the next
    intent's entry goes over a new WebSocket API connection, not over REST and not into a dead socket."""
    private, public = ed25519_files(tmp_path)
    args = ("--tick-ms", "0", "--result-wait-ms", "0", "--ed25519-key", f"{ED_KEY}:{public}")
    state, port = str(tmp_path / "paper.db"), free_port()
    paper = start_paper_server(*args, state=state, port=port)
    server = LocalRedis(port=free_port(), data_dir=tmp_path / "redis").start()
    with stack_on(server, paper, tmp_path / "logs", ws_env(private)) as stack:
        stack.start_worker()
        stack.start_bridge()
        before = unique_id("before")
        stack.inject(seed_intent(before, symbol="ETHUSDT", position_size_usd=100.0))
        assert stack.wait_result(before)["status"] == "filled"
        paper.stop()
        stack.paper = start_paper_server(*args, state=state, port=port)
        after = unique_id("after")
        stack.inject(seed_intent(after, symbol="ETHUSDT", position_size_usd=100.0))
        result = stack.wait_result(after, timeout_s=60)

        assert result["status"] == "filled", result
        assert ws_requests(stack.paper, "order.place") == 1
        assert rest_requests(stack.paper, "POST /fapi/v1/order") == 0
