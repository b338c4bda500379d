"""Pytest fixtures that run the paper exchange as a user would: ``qexec paper`` in a subprocess."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from websockets.sync.client import ClientConnection

from qexec.constants import PAPER_API_KEY, PAPER_API_SECRET
from qexec.ops.redisserver import free_port

with warnings.catch_warnings():
    # python-binance 1.0.37 imports a deprecated websockets name at import time; nothing we can change here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.client import Client
    from binance.ws.websocket_api import WebsocketAPI

START_TIMEOUT_S = 20.0


def qexec_command() -> list[str]:
    """How to run ``qexec``: the installed console script next to this interpreter, else via the module."""
    script = Path(sys.executable).parent / "qexec"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from qexec.cli import main; main()"]


@dataclass
class PaperExchange:
    """A running ``qexec paper`` process and the ways to talk to it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Any = None
    api_key: str = PAPER_API_KEY
    api_secret: str = PAPER_API_SECRET
    args: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        """The websocket base of this exchange (``ws://127.0.0.1:<port>``): streams share the HTTP port."""
        return "ws" + self.url.removeprefix("http")

    @property
    def ws_api_url(self) -> str:
        """The WebSocket API of this exchange (``ws://127.0.0.1:<port>/ws-fapi/v1``), on the HTTP port too."""
        return self.ws_url + "/ws-fapi/v1"

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call an admin route (``/paper/v1/...``) and return its JSON; raises on HTTP errors."""
        response = requests.request(method, self.url + path, json=json, timeout=10)
        response.raise_for_status()
        return response.json()

    def client(self, **kwargs: Any) -> Client:
        """A python-binance ``Client`` pointed at this exchange (``FUTURES_URL``/``API_URL`` on the instance, and
        its WebSocket API ``ws_future``, whose URL is fixed at construction); an ``api_key`` with a
        ``private_key`` signs with that key instead of the HMAC pair."""
        kwargs.setdefault("api_key", self.api_key)
        if "private_key" not in kwargs:
            kwargs.setdefault("api_secret", self.api_secret)
        client = Client(ping=False, **kwargs)
        client.FUTURES_URL = self.url + "/fapi"
        client.API_URL = self.url + "/api"
        client.ws_future = WebsocketAPI(url=self.ws_api_url)
        return client

    def signed(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> requests.Response:
        """A signed request built by hand (query string for GET, form body otherwise), for cases clients hide."""
        fields = {"timestamp": int(time.time() * 1000), **(params or {})}
        payload = urlencode(fields)
        secret = (api_secret or self.api_secret).encode()
        payload += "&signature=" + hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": api_key or self.api_key}
        if method == "GET":
            return requests.get(f"{self.url}{path}?{payload}", headers=headers, timeout=10)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return requests.request(method, self.url + path, data=payload, headers=headers, timeout=10)

    def set_price(self, symbol: str, price: str | float) -> None:
        """Set a mark price; limit orders and triggers it crosses run before this returns."""
        self.admin("POST", "/paper/v1/price", {"symbol": symbol, "price": str(price)})

    def add_fault(self, **fault: Any) -> dict[str, Any]:
        """Script one fault (see the README's fault table) and return it as stored."""
        added: dict[str, Any] = self.admin("POST", "/paper/v1/faults", fault)["faults"][0]
        return added

    def orders(self, **query: str) -> list[dict[str, Any]]:
        """Every order the exchange holds, filtered by ``symbol``/``clientOrderId``."""
        response = requests.get(self.url + "/paper/v1/orders", params=query, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        """The exchange's counters."""
        result: dict[str, Any] = self.admin("GET", "/paper/v1/stats")
        return result

    def stop(self) -> None:
        """Terminate the process (SIGTERM, so the server shuts down cleanly) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.log is not None:
            self.log.close()
            self.log = None

    def output(self) -> str:
        """What the server wrote to stderr so far (logs, tracebacks)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        text: str = self.log.read().decode(errors="replace")
        return text


def receive(ws: ClientConnection, timeout: float = 2.0) -> Any:
    """The next frame of a stream, decoded from JSON (TimeoutError when none arrives in ``timeout`` s)."""
    return json.loads(ws.recv(timeout=timeout))


def receive_until(ws: ClientConnection, done: Callable[[Any], bool], timeout: float = 3.0) -> list[Any]:
    """Frames up to and including the first for which ``done`` is true."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        frames.append(receive(ws, max(0.0, deadline - time.monotonic())))
        if done(frames[-1]):
            return frames


def start_paper(*args: str, state: str = ":memory:", seed: int = 7, port: int | None = None) -> PaperExchange:
    """Start ``qexec paper`` with ``args`` on a free port and wait until ``/fapi/v1/ping`` answers."""
    port = port or free_port()
    argv = [*qexec_command(), "paper", "--port", str(port), "--state", state, "--seed", str(seed), *args]
    # A file, not a pipe: a chatty server must never block on a full pipe. Closed by PaperExchange.stop().
    log = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    exchange = PaperExchange(url=f"http://127.0.0.1:{port}", process=process, log=log, args=argv)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = exchange.output()
            exchange.stop()
            raise RuntimeError(f"qexec paper exited with {process.returncode}: {stderr}")
        try:
            if requests.get(exchange.url + "/fapi/v1/ping", timeout=1).status_code == 200:
                return exchange
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    exchange.stop()
    raise RuntimeError(f"qexec paper did not answer on {exchange.url} within {START_TIMEOUT_S} s")


def pointed_at(
    client_class: Any, paper: PaperExchange, *, api_key: str | None = None, api_secret: str | None = None
) -> Any:
    """A ccxt client (``ccxt.binanceusdm`` or ``ccxt.pro.binanceusdm``) whose REST bases all point at the paper
    exchange, so nothing can reach a real Binance host; only its URLs are changed. ``api_key``/``api_secret``
    sign for another account than the default pair's."""
    # No currencies: with a key ccxt would read them from spot's /sapi, which the paper exchange does not serve.
    config = {
        "apiKey": api_key or paper.api_key,
        "secret": api_secret or paper.api_secret,
        "options": {"fetchCurrencies": False},
    }
    exchange = client_class(config)
    for name, url in list(exchange.urls["api"].items()):
        if isinstance(url, str):
            exchange.urls["api"][name] = paper.url + "/" + url.split("/", 3)[3]
    return exchange


@pytest.fixture(scope="session")
def paper_exchange() -> Iterator[PaperExchange]:
    """One paper exchange for the whole session (in memory, seed 7, prices frozen unless a test moves them)."""
    exchange = start_paper("--tick-ms", "0")
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture
def paper(paper_exchange: PaperExchange) -> PaperExchange:
    """The session's paper exchange, reset to a fresh account before the test."""
    paper_exchange.admin("POST", "/paper/v1/reset")
    return paper_exchange


@pytest.fixture
def start_paper_server() -> Iterator[Callable[..., PaperExchange]]:
    """A factory for extra, separately configured servers (``start(*flags, state=…)``), stopped after the test."""
    started: list[PaperExchange] = []

    def start(*args: str, state: str = ":memory:", seed: int = 7, port: int | None = None) -> PaperExchange:
        exchange = start_paper(*args, state=state, seed=seed, port=port)
        started.append(exchange)
        return exchange

    yield start
    for exchange in started:
        exchange.stop()
