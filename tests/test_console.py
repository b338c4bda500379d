"""`qexec console` in a real headless browser (Debian's chromium and chromedriver, driven by Selenium), against the
session's real stack: Redis, a Celery worker, a bridge and the paper exchange over HTTP.

Set CONSOLE_SCREENSHOT=docs/console.png to write the page's picture there (the README shows it).
"""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from paper_fixtures import free_port
from stack_fixtures import ROOT, Stack, stop_process, unique_id

from qexec import constants
from qexec.ops import halt
from qexec.pipeline.risk import halted

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30.0
AUTH = ("ops", "s3cret-console-pass")
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,950")

pytestmark = pytest.mark.slow


def _browser_or_reason() -> str | None:
    """Why no browser test can run here, or None."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401, PLC0415
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium under chromedriver; on CI a missing browser fails the run instead of skipping it."""
    reason = _browser_or_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the console's browser tests cannot run: {reason}")
        pytest.skip(reason)
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.set_capability("unhandledPromptBehavior", "ignore")  # the tests answer the confirmation themselves
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start_console(stack: Stack, name: str, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `qexec console` on the stack's Redis and paper exchange; the process and its URL."""
    port = free_port()
    env = dict(stack.env, QEXEC_CONSOLE_PORT=str(port), QEXEC_CONSOLE_VENUE_EVERY_S="1", **settings)
    proc = stack.spawn(name, [sys.executable, "-m", "qexec.cli", "console"], ready="Uvicorn running", env=env)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[str]:
    """The console on loopback, without credentials (the default); its URL."""
    proc, url = start_console(stack, "console")
    try:
        yield url
    finally:
        stop_process(proc)


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def row_status(driver: Any, intent_id: str) -> str | None:
    """The status the page's results table shows for an intent, or None while it has no row."""
    cells = driver.find_elements("css selector", f'#results tr[data-intent-id="{intent_id}"] td[data-col="status"]')
    return cells[0].text if cells else None


def open_live(driver: Any, url: str) -> None:
    """Load the page and wait for its first live snapshot; mark the document to tell a reload apart."""
    driver.get(url)
    wait_until(lambda: driver.find_element("id", "live").text.startswith("live"), "the page's first snapshot")
    driver.execute_script("window.qexecLoadedOnce = true;")


def intent(symbol: str = "ETHUSDT", side: str = "BUY", size_usd: float = 60.0) -> dict[str, Any]:
    """A fresh market intent in the seed producer's shape."""
    return {
        "intent_id": unique_id("console"),
        "symbol": symbol,
        "side": side,
        "position_size_usd": size_usd,
        "leverage": 2,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }


def test_a_fill_injected_after_the_page_loaded_appears_without_a_reload(
    browser: Any, console: str, stack: Stack
) -> None:
    """The page is live: a result written after it loaded shows up in its table, and the position with its SL/TP."""
    # Given the page, loaded and live
    open_live(browser, console)

    # When intents are filled after it loaded
    sent = [intent("ETHUSDT"), intent("BTCUSDT", size_usd=200.0), intent("AVAXUSDT")]
    for body in sent:
        stack.inject(body)
    for body in sent:
        assert stack.wait_result(body["intent_id"])["status"] == "filled"

    # Then each appears in the results table, and the document was never reloaded
    for body in sent:
        wait_until(lambda iid=body["intent_id"]: row_status(browser, iid) == "filled", f"{body['intent_id']} filled")
    assert browser.execute_script("return window.qexecLoadedOnce === true;")
    latency = f'#results tr[data-intent-id="{sent[0]["intent_id"]}"] td[data-col="latency_ms"]'
    assert browser.find_element("css selector", latency).text.isdigit()
    # ...and the position is shown with its stop-loss placed at the venue
    sl = 'tr[data-symbol="ETHUSDT"][data-direction="LONG"] td[data-col="sl_state"]'
    wait_until(lambda: any(c.text == "placed" for c in browser.find_elements("css selector", sl)), "ETHUSDT SL placed")
    shot = os.environ.get("CONSOLE_SCREENSHOT")
    if shot:
        browser.save_screenshot(str(ROOT / shot))


def test_halt_from_the_page_rejects_the_next_intent_until_resumed(browser: Any, console: str, stack: Stack) -> None:
    """Halt asks first: declined, nothing happens; accepted, the next intent is `rejected`; resume lifts it."""
    open_live(browser, console)
    try:
        # A declined confirmation halts nothing
        browser.find_element("id", "halt").click()
        wait_until(lambda: _alert(browser), "the confirmation dialog").dismiss()
        time.sleep(0.5)
        assert stack.redis.get(constants.HALT_KEY) is None

        # Accepted, the kill switch is set and the page says so
        browser.find_element("id", "halt").click()
        wait_until(lambda: _alert(browser), "the confirmation dialog").accept()
        wait_until(lambda: stack.redis.get(constants.HALT_KEY), "the halt flag in Redis")
        wait_until(lambda: browser.find_element("id", "halt-state").text == "HALTED", "the HALTED badge")
        record = halted(stack.redis)
        assert record is not None
        assert "console" in record["reason"]  # who and where: the user and the client's address

        # The next intent is rejected, and the page shows it
        refused = intent("ETHUSDT")
        stack.inject(refused)
        result = stack.wait_result(refused["intent_id"])
        assert result["status"] == "rejected"
        assert "halt" in result["reason"].lower()
        wait_until(lambda: row_status(browser, refused["intent_id"]) == "rejected", "the rejected row")

        # Resume from the page: the next intent is filled again
        browser.find_element("id", "resume").click()
        wait_until(lambda: _alert(browser), "the confirmation dialog").accept()
        wait_until(lambda: stack.redis.get(constants.HALT_KEY) is None, "the halt flag lifted")
        wait_until(lambda: browser.find_element("id", "halt-state").text == "TRADING", "the TRADING badge")
        placed = intent("ETHUSDT", side="SELL")
        stack.inject(placed)
        assert stack.wait_result(placed["intent_id"])["status"] == "filled"
    finally:
        halt.resume(stack.redis)  # never leave the session's stack halted


def _alert(driver: Any) -> Any:
    from selenium.common.exceptions import NoAlertPresentException  # noqa: PLC0415

    try:
        alert = driver.switch_to.alert
        _ = alert.text
    except NoAlertPresentException:
        return None
    return alert


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site: its page posts a form to the console's halt action as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        """Serve the page whose form submits itself."""
        body = (
            f'<form id="f" method="POST" action="{self.target}/api/halt" enctype="text/plain">'
            '<input name=\'{"reason":"csrf","x":"\' value=\'"}\'></form>'
            "<script>document.getElementById('f').submit();</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def test_a_cross_site_post_to_an_action_is_refused(browser: Any, console: str, stack: Stack) -> None:
    """A form on another site that posts to /api/halt halts nothing; so does a request without the page's token."""
    _Attacker.target = console
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # localhost is another site than 127.0.0.1: the browser sends Origin and Sec-Fetch-Site: cross-site
        browser.get(f"http://localhost:{server.server_address[1]}/")
        wait_until(lambda: "refused" in browser.find_element("tag name", "body").text, "the console's refusal")
        assert stack.redis.get(constants.HALT_KEY) is None

        page = requests.get(console + "/", timeout=5).text
        token = page.split('name="qexec-token" content="', 1)[1].split('"', 1)[0]
        foreign = requests.post(
            console + "/api/halt", headers={"X-Qexec-Token": token, "Origin": "http://evil.example"}, timeout=5
        )
        tokenless = requests.post(console + "/api/halt", headers={"Origin": console}, timeout=5)
        as_get = requests.get(console + "/api/halt", timeout=5)
        assert (foreign.status_code, tokenless.status_code, as_get.status_code) == (403, 403, 405)
        assert stack.redis.get(constants.HALT_KEY) is None
    finally:
        server.shutdown()
        server.server_close()
        halt.resume(stack.redis)


def test_beyond_loopback_the_console_needs_credentials(browser: Any, stack: Stack) -> None:
    """On every interface without QEXEC_CONSOLE_AUTH it refuses to start; with it, every route needs them."""
    # Without credentials: refused, exit 2 (which `qexec up` does not restart), naming the setting
    refused = subprocess.run(
        [sys.executable, "-m", "qexec.cli", "console"],
        cwd=ROOT,
        env=dict(stack.env, QEXEC_CONSOLE_HOST="0.0.0.0", QEXEC_CONSOLE_PORT=str(free_port())),  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "QEXEC_CONSOLE_AUTH" in refused.stderr

    # With credentials: 401 without them or with a wrong password, the live page with them
    auth = f"{AUTH[0]}:{AUTH[1]}"
    proc, url = start_console(stack, "console-auth", QEXEC_CONSOLE_HOST="0.0.0.0", QEXEC_CONSOLE_AUTH=auth)  # noqa: S104
    try:
        for path in ("/", "/events", "/api/state"):
            assert requests.get(url + path, timeout=5).status_code == 401, path
        assert requests.get(url + "/", auth=(AUTH[0], "wrong"), timeout=5).status_code == 401
        assert requests.post(url + "/api/halt", timeout=5).status_code == 401
        header = "Basic " + base64.b64encode(auth.encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": header}})
        try:
            open_live(browser, url)
            assert f"user {AUTH[0]}" in browser.find_element("tag name", "header").text
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        assert AUTH[1] not in stack.log("console-auth")  # the secret is never logged
    finally:
        stop_process(proc)
