"""The operator's web console (``/console`` on the sidecar) in a real browser:
Debian's headless chromium driven by Playwright, against the tests' stack
(real Envoy running the filter, the sidecar, the ai-server).

An operator logs in with the admin token, creates a key (its plaintext shown
once), sends traffic through Envoy with it, watches the key's plots take the
new data points, reads the gateway's live figures, and revokes the key; a
POST without the session's CSRF token, or from another origin, is refused.
A page under a name rebound to the sidecar's address (DNS rebinding) gets
nothing; a client that keeps failing to log in is made to wait. Limits are
set through the forms (a refused quota shows the API's error), a key's
budget bars show the admin API's figures, the alerts page lists an alert,
and the gateway page plots its last hour. A team is made on the teams page
(a refused quota shows the API's error), a key created into it; its bars
show the admin API's figures after traffic through its keys; deleting it
while it has keys shows the refusal; its limits change, keys move out and
in, and, emptied, it is deleted.
A screenshot of every page goes to ``tests/artifacts/console/`` (gitignored).
"""

from __future__ import annotations

import http.client
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

from tollgate_tooling.gateway import Gateway, assert_error, sidecar_request
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
#: What headless chromium needs on this kind of machine: no sandbox as root,
#: and none of its background connections to the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--no-first-run"]
MINTED_KEY = re.compile(r"^tg_[0-9a-f]{40}$")
OWN_SECRET = re.compile(r"^tgs_[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("PyPI `playwright` is not installed in .venv: run scripts/setup.sh "
                    "(scripts/requirements.txt pins it)", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM} is missing): "
                    "`apt-get install chromium` (scripts/setup.sh installs it)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Operator:
    """One person's browser on the console: a page, what it loaded, what it logged."""

    def __init__(self, browser, console: str):
        self.console = console
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.requested: list[str] = []
        self.problems: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def screenshot(self, name: str) -> Path:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def csrf_token(self) -> str:
        return self.page.locator('meta[name="tollgate-csrf"]').get_attribute("content")

    def chart_sum(self, chart: str, label: str | None = None) -> int:
        """The sum of a plot's data points (of its dataset ``label``, else the first)."""
        return self.page.evaluate(
            """([id, label]) => {
                const chart = Chart.getChart(id);
                const sets = chart.data.datasets;
                const set = label === null ? sets[0] : sets.find((d) => d.label === label);
                return set ? set.data.reduce((a, b) => a + b, 0) : 0;
            }""", [chart, label])

    def wait_for(self, what: str, check, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {timeout}s")
            self.page.wait_for_timeout(250)

    def close(self) -> None:
        self.context.close()


def login(op: Operator, token: str) -> None:
    op.page.goto(op.console + "/console")
    assert op.page.url == op.console + "/console/login", "no session: the login page"
    op.page.fill('input[name="token"]', token)
    with op.page.expect_navigation():
        op.page.click('button[type="submit"]')


def test_the_console_from_login_to_revocation(browser, sqlite_gateway: Gateway):
    stack = sqlite_gateway.stack
    console = stack.sidecar_url
    op = Operator(browser, console)
    try:
        # -- without a session: the login page, and 401 for data calls
        anonymous = op.context.request
        resp = anonymous.get(console + "/console/api/keys")
        assert resp.status == 401 and resp.json()["error"]["code"] == "session_required"
        resp = anonymous.post(console + "/console/api/keys", data={"name": "x"})
        assert resp.status == 401
        login(op, "not-the-admin-token-at-all")
        assert op.page.url == console + "/console/login"
        assert "That is not the admin token." in op.page.content()
        op.screenshot("login")
        op.problems.clear()  # the browser logs the refused login's 401

        # -- log in: a session cookie (HttpOnly, SameSite=Strict, short), never the token
        login(op, stack.config.admin_token)
        op.page.wait_for_url(console + "/console")
        cookies = {c["name"]: c for c in op.context.cookies()}
        session = cookies["tollgate_console"]
        assert session["httpOnly"] and session["sameSite"] == "Strict", session
        assert 0 < session["expires"] - time.time() <= 30 * 60 + 5, session
        assert stack.config.admin_token not in session["value"]
        assert stack.config.admin_token not in op.page.content()

        # -- create a key with its own signing secret: both shown once
        op.page.fill('#create-form input[name="name"]', "console-e2e")
        op.page.check('#create-form input[name="signing_secret"]')
        op.page.click('#create-form button[type="submit"]')
        op.page.locator("#created").wait_for(state="visible")
        key = op.page.locator("#created-key").inner_text().strip()
        secret = op.page.locator("#created-secret").inner_text().strip()
        stack.remember_key({"key": key, "signing_secret": secret})
        assert MINTED_KEY.match(key), key
        assert OWN_SECRET.match(secret), secret
        row = op.page.locator("#keys tbody tr", has_text="console-e2e")
        row.wait_for()
        key_id = int(row.get_attribute("data-key-id"))
        assert "ACTIVE" in row.inner_text() and row.locator("td.limits").inner_text() == "none"
        assert row.locator("td.last-use").inner_text() == "never"
        op.screenshot("keys-created")
        op.page.click("#created-done")
        assert op.page.locator("#created").is_hidden()
        for shown in (op.page.content(),
                      op.context.request.get(console + "/console/api/keys").text()):
            assert key not in shown and secret not in shown, "a secret is rendered again"
        op.page.reload()
        assert key not in op.page.content() and secret not in op.page.content()

        # -- the key's page: its plots, before traffic
        op.page.click(f'#keys tbody tr[data-key-id="{key_id}"] a')
        op.page.wait_for_url(f"{console}/console/keys/{key_id}")
        status = op.page.locator("#series-status")
        op.wait_for("the hour's series", lambda: status.get_attribute("data-window") == "hour")
        assert op.chart_sum("chart-requests") == 0
        points = op.page.evaluate("Chart.getChart('chart-requests').data.labels.length")
        assert points > 1, "every bucket of the window is plotted"

        # -- traffic through Envoy: 5 served, 2 refused for a body the token did not sign
        body = b'{"text": "hello console"}'
        for _ in range(5):
            resp = sqlite_gateway.post(body, key, sqlite_gateway.token(body, secret=secret))
            assert resp.status_code == 200, resp.text
        for _ in range(2):
            resp = sqlite_gateway.post(body, key, sqlite_gateway.token(b"other", secret=secret))
            assert_error(resp, 401, "body_hash_mismatch")

        # -- the plots take the new points (the page refreshes itself)
        op.wait_for("7 requests on the plot", lambda: op.chart_sum("chart-requests") == 7)
        op.wait_for("2 denials on the plot",
                    lambda: op.chart_sum("chart-denials", "body_hash_mismatch") == 2)
        assert op.chart_sum("chart-bytes", "request bytes") == 7 * len(body)
        assert op.chart_sum("chart-bytes", "response bytes") > 0
        assert op.page.locator("#total-requests").inner_text() == "7"
        # Units: what the ledger holds for the key (the upstream's header).
        [stored] = sqlite_gateway.ledger.query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(units), 0) AS units FROM usage_log "
            "WHERE api_key_id = ?", [key_id])
        assert stored["n"] == 7
        assert op.chart_sum("chart-units") == stored["units"]
        assert op.page.locator("#total-units").inner_text() == f"{stored['units']:,}"
        op.screenshot("key")
        op.page.click('[data-window="30d"]')
        op.wait_for("the 30 days' series", lambda: status.get_attribute("data-window") == "30d")
        assert op.chart_sum("chart-requests") == 7
        op.page.click('[data-window="day"]')
        op.wait_for("the day's series", lambda: status.get_attribute("data-window") == "day")
        assert op.chart_sum("chart-requests") == 7

        # -- live figures: the sidecar's own and the filter's, read from Envoy's admin
        op.page.click('nav a[href="/console/gateway"]')
        op.page.wait_for_url(console + "/console/gateway")
        op.page.click("#raw-toggle")
        op.page.locator('#envoy-metrics tr[data-metric^="tollgate_"]').first.wait_for()
        op.page.locator('#sidecar-metrics tr[data-metric="tollgate_http_requests_total"]').first.wait_for()
        assert stack.envoy_admin in op.page.locator("#envoy-status").inner_text()
        op.screenshot("gateway")

        # -- a POST without the CSRF token, or from another origin, is refused
        op.page.goto(console + "/console")
        csrf = op.csrf_token()
        keys_before = op.context.request.get(console + "/console/api/keys").json()["keys"]
        for headers in ({"origin": console},
                        {"origin": console, "x-csrf-token": "0" * 64},
                        {"origin": "http://evil.example", "x-csrf-token": csrf}):
            resp = op.context.request.post(console + "/console/api/keys",
                                           data={"name": "forged"}, headers=headers)
            assert resp.status == 403, (headers, resp.text())
            assert resp.json()["error"]["code"] == "csrf_refused"
            resp = op.context.request.post(f"{console}/console/api/keys/{key_id}/revoke",
                                           headers=headers)
            assert resp.status == 403, (headers, resp.text())
        keys_after = op.context.request.get(console + "/console/api/keys").json()["keys"]
        assert keys_after == keys_before, "a refused POST changed something"

        # -- revoke, after a confirmation; Envoy then refuses the key
        row = op.page.locator(f'#keys tbody tr[data-key-id="{key_id}"]')
        op.wait_for("the key's last use", lambda: row.locator("td.last-use").inner_text() != "never")
        row.locator("button", has_text="Revoke").click()
        op.page.locator("#revoke-dialog").wait_for(state="visible")
        op.screenshot("revoke-confirmation")
        op.page.click("#revoke-confirm")
        op.wait_for("the key listed REVOKED", lambda: "REVOKED" in row.inner_text())
        op.wait_for("Envoy refusing the revoked key", lambda: sqlite_gateway.post(
            body, key, sqlite_gateway.token(body, secret=secret)).status_code == 403)
        op.screenshot("keys")

        # -- everything the pages loaded came from the sidecar; no CSP violation, no error
        assert op.requested and all(url.startswith(console + "/") for url in op.requested), \
            [u for u in op.requested if not u.startswith(console + "/")]
        assert not op.problems, op.problems

        # -- log out: the session is gone server side
        op.page.click("#logout")
        op.page.wait_for_url(console + "/console/login")
        resp = op.context.request.get(console + "/console/api/keys")
        assert resp.status == 401
    finally:
        op.close()


def test_a_rebound_name_reaches_no_console_page(browser, sqlite_gateway: Gateway):
    """DNS rebinding, as the browser lives it: chromium resolves an attacker's
    name to the sidecar's address. A page there names that host in every
    request, so the console answers it nothing, not even the login form;
    ``localhost`` on the sidecar's port is the console's own."""
    stack = sqlite_gateway.stack
    port = stack.config.sidecar_port
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_ARGS + ["--host-resolver-rules=MAP rebound.test 127.0.0.1"])
    try:
        page = rebinding.new_page()
        resp = page.goto(f"http://rebound.test:{port}/console/login")
        assert resp.status == 403, resp.text()
        assert resp.json()["error"]["code"] == "host_not_allowed"
        # The rebound page's own script posts the token (say, one it phished).
        status = page.evaluate(
            """async (token) => (await fetch("/console/login", {
                method: "POST",
                headers: {"content-type": "application/x-www-form-urlencoded"},
                body: "token=" + encodeURIComponent(token),
            })).status""", stack.config.admin_token)
        assert status == 403
        assert not page.context.cookies(), "no session for the rebound page"

        console = f"http://localhost:{port}"
        op = Operator(rebinding, console)
        try:
            login(op, stack.config.admin_token)
            op.page.wait_for_url(console + "/console")
            assert op.csrf_token(), "logged in at localhost"
        finally:
            op.close()
    finally:
        rebinding.close()


def login_from(source: str, port: int, token: str) -> http.client.HTTPResponse:
    """A login POST from the loopback address ``source`` (all of 127.0.0.0/8
    is this machine), as the login form sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    conn.request("POST", "/console/login", body=f"token={token}", headers={
        "content-type": "application/x-www-form-urlencoded",
        "origin": f"http://127.0.0.1:{port}",
    })
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def console_logins(console: str) -> dict[str, int]:
    """``tollgate_console_logins_total`` by result, from ``/metrics``."""
    text = requests.get(console + "/metrics", timeout=5).text
    return {m[1]: int(m[2]) for m in re.finditer(
        r'^tollgate_console_logins_total\{result="(\w+)"\} (\d+)$', text, re.M)}


def test_failed_logins_are_slowed_per_address_and_counted(sqlite_gateway: Gateway):
    """Five wrong tokens from one address, then it waits (429, Retry-After),
    even with the right token; another address is not slowed. 127.0.0.9 is
    this test's own address, so the browser tests' logins are not slowed."""
    stack = sqlite_gateway.stack
    port = stack.config.sidecar_port
    before = console_logins(stack.sidecar_url)
    answers = [login_from("127.0.0.9", port, "not-the-admin-token").status for _ in range(5)]
    assert answers == [401] * 5
    waits = login_from("127.0.0.9", port, stack.config.admin_token)
    assert waits.status == 429
    assert 1 <= int(waits.getheader("retry-after")) <= 900
    other = login_from("127.0.0.10", port, stack.config.admin_token)
    assert other.status == 303, "another address logs in"
    after = console_logins(stack.sidecar_url)
    assert after["wrong_token"] - before["wrong_token"] == 5
    assert after["throttled"] - before["throttled"] == 1
    assert after["succeeded"] - before["succeeded"] == 1


def test_the_pages_forbid_anything_from_elsewhere(sqlite_gateway: Gateway):
    """The Content-Security-Policy that keeps every asset on the sidecar, and
    the embedded Chart.js npm installed at build time."""
    console = sqlite_gateway.stack.sidecar_url
    resp = requests.get(console + "/console/login", timeout=5)
    assert resp.status_code == 200
    policy = resp.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy, policy
    assert "http" not in policy, policy
    assert resp.headers["x-frame-options"] == "DENY"
    resp = requests.get(console + "/console/assets/chart.umd.min.js", timeout=5)
    assert resp.status_code == 401, "the scripts need a session"
    assert requests.get(console + "/console/assets/console.css", timeout=5).status_code == 200


def admin(stack, method: str, path: str, body=None) -> requests.Response:
    """A call to the sidecar's admin API with the admin token."""
    return sidecar_request(stack, method, path, body,
                           headers={"authorization": f"Bearer {stack.config.admin_token}"})


def budget_on_page(op: Operator, quota: str) -> dict[str, int]:
    """A budget bar's figures as the page shows them."""
    box = op.page.locator(f'.budget[data-quota="{quota}"]')
    return {part: int(box.locator(f".n-{part}").get_attribute("data-value"))
            for part in ("used", "reserved", "left", "limit")}


def test_limits_budgets_alerts_and_the_gateway_plots(browser, sqlite_gateway: Gateway):
    stack = sqlite_gateway.stack
    console = stack.sidecar_url
    op = Operator(browser, console)
    try:
        login(op, stack.config.admin_token)
        op.page.wait_for_url(console + "/console")

        # -- a key with a rate and quotas, through the form; stored as spelled
        form = "#create-form"
        op.page.fill(f'{form} input[name="name"]', "budgeted")
        op.page.fill(f'{form} input[name="rate"]', "50/s")
        op.page.fill(f'{form} input[name="quotas"]', "requests=40/day  request_bytes=1MiB/day")
        op.page.click(f'{form} button[type="submit"]')
        op.page.locator("#created").wait_for(state="visible")
        key = op.page.locator("#created-key").inner_text().strip()
        stack.remember_key({"key": key})
        op.page.click("#created-done")
        row = op.page.locator("#keys tbody tr", has_text="budgeted")
        row.wait_for()
        key_id = int(row.get_attribute("data-key-id"))
        [stored] = [k for k in admin(stack, "GET", "/v1/keys").json()["keys"] if k["id"] == key_id]
        assert stored["limits"] == {
            "rate": {"count": 50, "per": "s", "burst": 50},
            "quotas": [{"kind": "requests", "limit": 40, "window": "day"},
                       {"kind": "request_bytes", "limit": 1048576, "window": "day"}],
        }, stored
        assert row.locator("td.limits").inner_text() == \
            "rate=50/s burst=50 requests=40/day request_bytes=1048576/day"

        # -- a quota the API refuses: its 400, naming the field, is what the page shows
        refused = admin(stack, "POST", "/v1/keys", {"name": "bad-quota", "quotas": ["requests=lots/day"]})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["field"] == "quota", refused.text
        message = refused.json()["error"]["message"]
        op.page.fill(f'{form} input[name="name"]', "bad-quota")
        op.page.fill(f'{form} input[name="quotas"]', "requests=lots/day")
        op.page.click(f'{form} button[type="submit"]')
        error = op.page.locator("#create-error")
        op.wait_for("the API's error on the page", lambda: message in error.inner_text())
        assert error.get_attribute("data-field") == "quota"
        assert "quota" in error.inner_text()
        assert not [k for k in admin(stack, "GET", "/v1/keys").json()["keys"]
                    if k["name"] == "bad-quota"], "a refused key was stored"
        op.problems.clear()  # the browser logs the refused call's 400

        # -- traffic: the key spends some of its budgets through Envoy
        body = b'{"text": "hello budgets"}'
        for _ in range(6):
            resp = sqlite_gateway.post(body, key)
            assert resp.status_code == 200, resp.text

        # -- the key's page: one bar per quota, its figures the API's
        op.page.goto(f"{console}/console/keys/{key_id}")
        op.page.locator('.budget[data-quota="requests"]').wait_for()

        def page_matches_api():
            api = {b["quota"]: b for b in admin(
                stack, "GET", f"/v1/keys/{key_id}/budgets").json()["budgets"]}
            shown = {q: budget_on_page(op, q) for q in ("requests", "request_bytes")}
            want = {q: {f: api[q][f] for f in ("used", "reserved", "left", "limit")}
                    for q in shown}
            return shown == want and shown["requests"]["used"] == 6 and shown
        shown = op.wait_for("the bars showing the API's budgets with 6 requests used",
                            page_matches_api)
        assert shown["requests"]["limit"] == 40
        assert shown["request_bytes"]["used"] == 6 * len(body)
        # Envoy holds a grant: part of the budget is reserved, not yet used.
        assert shown["requests"]["used"] + shown["requests"]["reserved"] \
            + shown["requests"]["left"] == 40
        widths = op.page.evaluate("""() => [...document.querySelectorAll(
            '.budget[data-quota="requests"] .bar span')].map((s) => s.getBoundingClientRect().width)""")
        assert widths[0] > 0 and widths[2] > 0, widths
        op.screenshot("budgets")

        # -- change the limits on the key's page; a bad rate shows the API's error
        op.page.click("#key-limits-edit")
        dialog = op.page.locator("#limits-dialog")
        dialog.wait_for(state="visible")
        assert op.page.locator('#limits-form input[name="quotas"]').input_value() == \
            "requests=40/day request_bytes=1048576/day"
        op.page.fill('#limits-form input[name="rate"]', "50/hour")
        op.page.click('#limits-form button[type="submit"]')
        limits_error = op.page.locator("#limits-error")
        op.wait_for("the refused rate's error", lambda: "rate" in limits_error.inner_text())
        assert limits_error.get_attribute("data-field") == "rate"
        op.problems.clear()  # the refused change's 400
        op.page.fill('#limits-form input[name="rate"]', "")
        op.page.fill('#limits-form input[name="burst"]', "")
        op.page.fill('#limits-form input[name="quotas"]', "requests=60/day")
        op.page.click('#limits-form button[type="submit"]')
        dialog.wait_for(state="hidden")
        op.wait_for("the new limits shown",
                    lambda: op.page.locator("#key-limits").inner_text() == "requests=60/day")
        [stored] = [k for k in admin(stack, "GET", "/v1/keys").json()["keys"] if k["id"] == key_id]
        assert stored["limits"] == {"rate": None, "quotas": [
            {"kind": "requests", "limit": 60, "window": "day"}]}, stored
        op.wait_for("one bar left", lambda: op.page.locator(".budget").count() == 1
                    and budget_on_page(op, "requests")["limit"] == 60)
        assert op.page.evaluate("Chart.getChart('chart-spend') !== undefined")

        # -- the alerts page lists an alert of the key
        added = admin(stack, "POST", "/v1/alerts", {
            "key_id": key_id, "thresholds": [50, 100], "url": "http://127.0.0.1:9/hook"})
        assert added.status_code == 201, added.text
        op.page.click('nav a[href="/console/alerts"]')
        op.page.wait_for_url(console + "/console/alerts")
        alert_id = added.json()["id"]
        alert_row = op.page.locator(f'#alerts tbody tr[data-alert-id="{alert_id}"]')
        alert_row.wait_for()
        assert "50 %, 100 %" in alert_row.inner_text()
        assert added.json()["secret"] not in op.page.content()
        key_link = alert_row.locator("td:nth-child(2) a")
        assert key_link.get_attribute("href") == f"/console/keys/{key_id}"
        assert key_link.inner_text() == f"key {key_id}"
        # A team's alert names its team, and links to the teams page.
        team = admin(stack, "POST", "/v1/teams", {"name": f"alerted-{uuid.uuid4().hex[:6]}"})
        assert team.status_code == 201, team.text
        team_alert = admin(stack, "POST", "/v1/alerts", {
            "team_id": team.json()["id"], "thresholds": [80], "url": "http://127.0.0.1:9/hook"})
        assert team_alert.status_code == 201, team_alert.text
        team_row = op.page.locator(f'#alerts tbody tr[data-alert-id="{team_alert.json()["id"]}"]')
        team_row.wait_for(timeout=15_000)
        team_link = team_row.locator("td:nth-child(2) a")
        assert team_link.inner_text() == f"team {team.json()['id']}"
        assert team_link.get_attribute("href") == "/console/teams"
        op.screenshot("alerts")

        # -- the gateway page plots the last hour from the sidecar's samples
        op.page.click('nav a[href="/console/gateway"]')
        op.page.wait_for_url(console + "/console/gateway")
        op.wait_for("a plotted interval", lambda: int(
            op.page.locator("#history-status").get_attribute("data-points") or 0) >= 1, timeout=40)
        for chart in ("chart-gw-requests", "chart-gw-cache", "chart-gw-verify", "chart-gw-usage"):
            assert op.page.evaluate(f"Chart.getChart('{chart}').data.labels.length") >= 1, chart
        op.wait_for("allowed requests on the plot",
                    lambda: op.chart_sum("chart-gw-requests", "allowed") > 0, timeout=40)
        assert op.page.locator("#raw-figures").is_hidden()
        op.page.click("#raw-toggle")
        op.page.locator('#envoy-metrics tr[data-metric="tollgate_requests_allowed"]').first.wait_for()
        op.screenshot("gateway-plots")

        assert all(url.startswith(console + "/") for url in op.requested)
        assert not op.problems, op.problems
    finally:
        op.close()


def team_budget_on_page(op: Operator, team_id: int, quota: str) -> dict[str, int]:
    """A team's budget bar's figures as the teams page shows them."""
    box = op.page.locator(f'.team[data-team-id="{team_id}"] .budget[data-quota="{quota}"]')
    return {part: int(box.locator(f".n-{part}").get_attribute("data-value"))
            for part in ("used", "reserved", "left", "limit")}


def test_teams_their_keys_and_budgets(browser, sqlite_gateway: Gateway):
    stack = sqlite_gateway.stack
    console = stack.sidecar_url
    op = Operator(browser, console)
    suffix = uuid.uuid4().hex[:6]
    try:
        login(op, stack.config.admin_token)
        op.page.wait_for_url(console + "/console")
        op.page.click('nav a[href="/console/teams"]')
        op.page.wait_for_url(console + "/console/teams")
        form = "#team-form"

        # -- a quota the API refuses: its 400, naming the field, is what the page shows
        bad = {"name": f"bad-team-{suffix}", "quotas": ["requests=lots/day"]}
        refused = admin(stack, "POST", "/v1/teams", bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["field"] == "quota", refused.text
        op.page.fill(f'{form} input[name="name"]', bad["name"])
        op.page.fill(f'{form} input[name="quotas"]', "requests=lots/day")
        op.page.click(f'{form} button[type="submit"]')
        error = op.page.locator("#team-create-error")
        op.wait_for("the API's error on the page",
                    lambda: refused.json()["error"]["message"] in error.inner_text())
        assert error.get_attribute("data-field") == "quota"
        assert not [t for t in admin(stack, "GET", "/v1/teams").json()["teams"]
                    if t["name"] == bad["name"]], "a refused team was stored"
        op.problems.clear()  # the browser logs the refused call's 400

        # -- a team with quotas, through the form; stored as spelled
        name = f"research-{suffix}"
        op.page.fill(f'{form} input[name="name"]', name)
        op.page.fill(f'{form} input[name="quotas"]', "requests=40/day request_bytes=1MiB/day")
        op.page.click(f'{form} button[type="submit"]')
        card = op.page.locator(".team", has_text=name)
        card.wait_for()
        assert error.inner_text() == ""
        team_id = int(card.get_attribute("data-team-id"))
        stored = admin(stack, "GET", f"/v1/teams/{team_id}").json()
        assert stored["limits"]["spec"] == "requests=40/day request_bytes=1048576/day", stored
        assert card.locator(".team-limits").inner_text() == stored["limits"]["spec"]
        assert "No key in this team." in card.inner_text()

        # -- a key created into the team on the keys page (the form's team select)
        op.page.click('nav a[href="/console"]')
        op.page.wait_for_url(console + "/console")
        team_select = '#create-form select[name="team_id"]'
        op.page.locator(f'{team_select} option[value="{team_id}"]').wait_for(state="attached")
        op.page.fill('#create-form input[name="name"]', f"member-{suffix}")
        op.page.select_option(team_select, str(team_id))
        op.page.click('#create-form button[type="submit"]')
        op.page.locator("#created").wait_for(state="visible")
        key = op.page.locator("#created-key").inner_text().strip()
        stack.remember_key({"key": key})
        op.page.click("#created-done")
        row = op.page.locator("#keys tbody tr", has_text=f"member-{suffix}")
        row.wait_for()
        key_id = int(row.get_attribute("data-key-id"))
        assert row.locator("td.team").inner_text() == name
        [member] = [k for k in admin(stack, "GET", "/v1/keys").json()["keys"] if k["id"] == key_id]
        assert member["team_id"] == team_id
        # A second key of the team, through the API.
        other = admin(stack, "POST", "/v1/keys", {"name": f"batch-{suffix}", "team_id": team_id})
        assert other.status_code == 201, other.text
        stack.remember_key(other.json())
        other_key, other_id = other.json()["key"], other.json()["id"]

        # -- traffic through Envoy: the team's keys spend its budgets
        body = b'{"text": "hello team budgets"}'
        for sent in [key] * 4 + [other_key] * 2:
            resp = sqlite_gateway.post(body, sent)
            assert resp.status_code == 200, resp.text

        # -- the teams page: its keys, and one bar per quota, its figures the API's
        op.page.click('nav a[href="/console/teams"]')
        op.page.wait_for_url(console + "/console/teams")
        card = op.page.locator(f'.team[data-team-id="{team_id}"]')
        card.locator('.budget[data-quota="requests"]').wait_for()
        keys_shown = card.locator(".team-keys tbody tr")
        assert sorted(int(keys_shown.nth(i).get_attribute("data-key-id"))
                      for i in range(keys_shown.count())) == sorted([key_id, other_id])
        assert f"member-{suffix}" in card.inner_text() and f"batch-{suffix}" in card.inner_text()

        def page_matches_api():
            reply = admin(stack, "GET", f"/v1/teams/{team_id}/budgets").json()
            api = {b["quota"]: b for b in reply["budgets"]}
            shown = {q: team_budget_on_page(op, team_id, q) for q in ("requests", "request_bytes")}
            want = {q: {f: api[q][f] for f in ("used", "reserved", "left", "limit")}
                    for q in shown}
            return shown == want and shown["requests"]["used"] == 6 and shown
        shown = op.wait_for("the team's bars showing the API's budgets with 6 requests used",
                            page_matches_api)
        assert shown["requests"]["limit"] == 40
        assert shown["request_bytes"]["used"] == 6 * len(body)
        assert shown["requests"]["used"] + shown["requests"]["reserved"] \
            + shown["requests"]["left"] == 40
        widths = op.page.evaluate(f"""() => [...document.querySelectorAll(
            '.team[data-team-id="{team_id}"] .budget[data-quota="requests"] .bar span')]
            .map((s) => s.getBoundingClientRect().width)""")
        assert widths[0] > 0 and widths[2] > 0, widths
        op.screenshot("teams")

        # -- deleting a team with keys: the API's refusal is what the page shows
        card.locator("button.delete-team").click()
        op.page.locator("#delete-team-dialog").wait_for(state="visible")
        op.page.click("#delete-team-confirm")
        teams_error = op.page.locator("#teams-error")
        op.wait_for("the refusal on the page", lambda: "still has 2 key(s)" in teams_error.inner_text())
        assert teams_error.get_attribute("data-code") == "team_has_keys"
        assert admin(stack, "GET", f"/v1/teams/{team_id}").status_code == 200, "not deleted"
        op.problems.clear()  # the refused call's 409

        # -- the team's limits changed through the limits dialog
        card.locator("button.edit-limits").click()
        dialog = op.page.locator("#limits-dialog")
        dialog.wait_for(state="visible")
        assert op.page.locator('#limits-form input[name="quotas"]').input_value() == \
            "requests=40/day request_bytes=1048576/day"
        op.page.fill('#limits-form input[name="quotas"]', "requests=60/day")
        op.page.click('#limits-form button[type="submit"]')
        dialog.wait_for(state="hidden")
        op.wait_for("the new limits shown", lambda: card.locator(".team-limits").inner_text()
                    == "requests=60/day")
        op.wait_for("one bar of 60", lambda: card.locator(".budget").count() == 1
                    and team_budget_on_page(op, team_id, "requests")["limit"] == 60)

        # -- a key moved out of the team on its own page, and back in on the team's
        op.page.goto(f"{console}/console/keys/{key_id}")
        op.page.locator(f'#key-team option[value="{team_id}"]').wait_for(state="attached")
        assert op.page.locator("#key-team").input_value() == str(team_id)
        op.page.select_option("#key-team", "")
        op.page.click('#key-team-form button[type="submit"]')
        op.wait_for("the key in no team",
                    lambda: op.page.locator("#key-team-link").inner_text() == "in no team")
        [moved] = [k for k in admin(stack, "GET", "/v1/keys").json()["keys"] if k["id"] == key_id]
        assert moved["team_id"] is None, moved
        op.page.goto(f"{console}/console/teams")
        card = op.page.locator(f'.team[data-team-id="{team_id}"]')
        card.locator(f'.team-keys tr[data-key-id="{other_id}"]').wait_for()
        assert card.locator(f'.team-keys tr[data-key-id="{key_id}"]').count() == 0
        card.locator('select[name="key_id"]').select_option(str(key_id))
        card.locator('form.add-key button[type="submit"]').click()
        card.locator(f'.team-keys tr[data-key-id="{key_id}"]').wait_for()

        # -- emptied, the team is deleted
        for member_id in (key_id, other_id):
            card.locator(f'.team-keys tr[data-key-id="{member_id}"] button.take-out').click()
            card.locator(f'.team-keys tr[data-key-id="{member_id}"]').wait_for(state="detached")
        card.locator("button.delete-team").click()
        op.page.click("#delete-team-confirm")
        card.wait_for(state="detached")
        assert teams_error.inner_text() == ""
        assert admin(stack, "GET", f"/v1/teams/{team_id}").status_code == 404

        assert all(url.startswith(console + "/") for url in op.requested)
        assert not op.problems, op.problems
    finally:
        op.close()
