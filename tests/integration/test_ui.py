"""The dashboard at /ui in a real headless browser (Debian's Chromium driven by Playwright),
against a running svcreg on the real API server: sign in with a ServiceAccount token, see a
registration turn from Healthy to Unhealthy live when its target dies, filter, open explain;
and ``svcreg ui``, which signs the browser in without the token ever being in a URL.

Screenshots are saved under build/test-artifacts/ui/ (the pictures in docs/images/ are two of them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright import sync_api as playwright

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import HttpTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "ui"
AUDIENCE = "svcreg"
WAIT_MS = 60_000
# A tenant-written field meant to run script in a viewer's page: it must show as text.
HOSTILE_NAME = "<img src=x onerror=\"document.title='owned'\">"


@dataclass
class Dashboard:
    operator: OperatorProcess
    ns: str
    other: str
    token: str
    target: HttpTarget
    cluster: Cluster


@pytest.fixture(scope="module")
def dashboard(
    k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: bash scripts/install.sh installs Debian's chromium")
    ns, other = k8s.create_namespace("ui"), k8s.create_namespace("ui")
    k8s.create_service_account(ns, "viewer")
    k8s.grant(ns, "viewer", ["get", "list", "watch"])
    target = HttpTarget()
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}
    for name, spec in {
        "web-1": {"service": "web", "version": "1.2.0", "capabilities": ["render"], "tags": ["edge"]},
        "web-2": {
            "service": "web",
            "version": "1.3.0",
            "capabilities": ["render"],
            "displayName": HOSTILE_NAME,
        },
        "db-1": {"service": "db", "version": "15.0.0", "capabilities": ["sql"]},
    }.items():
        k8s.apply(registration(name, {"endpoint": target.url, "healthCheck": check, **spec}), ns)
    # The same target and service in a namespace the viewer may not read: never shown.
    k8s.apply(registration("hidden", {"service": "web", "endpoint": target.url, "healthCheck": check}), other)
    operator = OperatorProcess(
        control_plane,
        tmp_path_factory.mktemp("ui") / "operator.log",
        "--namespace",
        "ui-*",
        "--probe-allow",
        "127.0.0.0/8",
        "--token-audience",
        AUDIENCE,
    ).start()
    for name in ("web-1", "web-2", "db-1"):
        k8s.kubectl(
            "wait", "--for=jsonpath={.status.health}=Healthy", f"svcreg/{name}", "-n", ns, "--timeout=60s"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield Dashboard(operator, ns, other, k8s.token(ns, "viewer", [AUDIENCE]), target, control_plane)
    operator.stop()
    target.close()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _row(page: object, ns: str, name: str) -> object:
    return page.locator(f'#services tr[data-key="{ns}/{name}"]')  # type: ignore[attr-defined]


def test_page_is_static_and_locked_down(dashboard: Dashboard) -> None:
    """The page and its files are served with a CSP that forbids inline script and foreign
    origins; anything else under /ui is 404; the page itself needs no token."""
    page = httpx.get(dashboard.operator.url + "/ui/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy
        and "default-src 'none'" in policy
        and "frame-ancestors 'none'" in policy
    )
    assert page.headers["x-content-type-options"] == "nosniff" and "<script" in page.text
    assert "<script>" not in page.text  # no inline script: the CSP would refuse it anyway
    assert httpx.get(dashboard.operator.url + "/ui/app.js", timeout=30).status_code == 200
    assert httpx.get(dashboard.operator.url + "/ui/secrets.txt", timeout=30).status_code == 404
    moved = httpx.get(dashboard.operator.url + "/ui", timeout=30)
    assert moved.status_code == 302 and moved.headers["location"] == "/ui/"


def test_sign_in_live_health_filter_and_explain(dashboard: Dashboard, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 800})  # type: ignore[attr-defined]
    page.set_default_timeout(WAIT_MS)
    page.goto(dashboard.operator.url + "/ui/")
    # Not signed in: the sign-in form, and a refused token is said so.
    page.fill("#token", "not-a-token")
    page.click("#sign-in-button")
    page.wait_for_selector("#sign-in-error:has-text('refused')")
    page.fill("#token", dashboard.token)
    page.click("#sign-in-button")
    page.wait_for_selector("#live[data-state='live']")
    web1 = _row(page, dashboard.ns, "web-1")
    assert web1.locator("td.health").inner_text() == "Healthy"
    # Only what the viewer may list: the other namespace's instance of "web" is not there.
    assert page.locator(f'#services tr[data-key^="{dashboard.other}/"]').count() == 0
    assert page.locator("#services tr.instance").count() == 3
    # The token is in no URL, and tenant-written text is text, not markup.
    assert dashboard.token not in page.url
    assert HOSTILE_NAME in _row(page, dashboard.ns, "web-2").inner_text()
    assert page.locator("#services img").count() == 0 and page.title() == "svcreg"
    page.screenshot(path=str(ARTIFACTS / "services.png"), full_page=True)

    # The target dies: the page turns the instances Unhealthy by itself (the watch), and the
    # timeline records the transition.
    dashboard.target.mode = "fail"
    try:
        page.wait_for_selector(
            f'#services tr[data-key="{dashboard.ns}/web-1"] td.health[data-health="Unhealthy"]'
        )
        page.click("button[data-tab='timeline']")
        page.wait_for_selector("#timeline tr.transition")
        transition = page.locator("#timeline tr.transition", has_text="web-1").first.inner_text()
        assert "Healthy" in transition and "Unhealthy" in transition
        page.screenshot(path=str(ARTIFACTS / "timeline.png"), full_page=True)

        # Filter as the API does: one service.
        page.click("button[data-tab='services']")
        page.fill("#filters input[name='service']", "db")
        page.click("#apply")
        playwright.expect(page.locator("#services tr.instance")).to_have_count(1, timeout=WAIT_MS)
        assert _row(page, dashboard.ns, "db-1").count() == 1
        bad = page.locator("#filters input[name='version']")
        bad.fill("not a range")
        page.click("#apply")
        page.wait_for_selector("#message:has-text('version')")
        bad.fill("")
        page.fill("#filters input[name='service']", "web")
        page.click("#apply")
        playwright.expect(page.locator("#services tr.instance")).to_have_count(2, timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Explain: why web-1 is not in a default (healthy) answer.
        _row(page, dashboard.ns, "web-1").locator("button.explain").click()
        reasons = page.locator(f'#explain tr[data-key="{dashboard.ns}/web-1"] td.reasons')
        reasons.wait_for()
        assert reasons.inner_text().startswith("health is Unhealthy")
        # Narrowed to the viewer's namespace: the other namespace's "web" is not even counted.
        assert "may not read" not in page.inner_text("#explain-summary")
        probe = page.locator(f'#explain tr[data-key="{dashboard.ns}/web-1"]').inner_text()
        assert "failed BadStatus" in probe and "HTTP 503" in probe
        page.screenshot(path=str(ARTIFACTS / "explain.png"), full_page=True)
    finally:
        dashboard.target.mode = "ok"
    # Sign out forgets the token in this tab.
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not(.hidden)")
    assert page.evaluate("sessionStorage.getItem('svcreg.token')") is None


def test_svcreg_ui_signs_in_without_a_token_in_any_url(
    dashboard: Dashboard, browser: object, tmp_path: Path
) -> None:
    """svcreg ui: a short-lived token requested for the ServiceAccount by the kubeconfig user,
    carried by a loopback proxy; the browser gets a one-time link and a cookie, never the token."""
    env = dashboard.cluster.env() | {"SVCREG_TOKEN": ""}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "svcreg.cli", "ui", "--no-browser",
            "--url", dashboard.operator.url, "--service-account", f"{dashboard.ns}/viewer",
        ],
        env={k: v for k, v in env.items() if k != "SVCREG_TOKEN"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        link_line = process.stdout.readline()
        assert first.startswith("svcreg ui: the dashboard of"), first + (
            process.stderr.read() if process.poll() else ""
        )
        link = link_line.rsplit(" ", 1)[1].strip()
        base = link.split("/sign-in/")[0]
        # Without the cookie the proxy lends nobody its token.
        assert httpx.get(base + "/v1/services", timeout=30).status_code == 401
        page = browser.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(WAIT_MS)
        page.goto(link)
        page.wait_for_selector("#live[data-state='live']")
        assert page.url == base + "/ui/"
        assert "svcreg ui" in page.inner_text("#who")
        assert _row(page, dashboard.ns, "db-1").count() == 1
        assert page.evaluate("sessionStorage.getItem('svcreg.token')") is None
        # The link works once; the session reads only.
        assert httpx.get(link, timeout=30).status_code == 403
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        written = httpx.post(base + "/v1/heartbeat/x/y", cookies=cookies, timeout=30)
        assert written.status_code == 405
        answer = httpx.get(base + "/v1/services", params={"health": "any"}, cookies=cookies, timeout=30)
        assert sorted(i["name"] for i in answer.json()["items"]) == ["db-1", "web-1", "web-2"]
    finally:
        process.terminate()
        process.wait(30)


def test_svcreg_ui_refuses_a_certificate_user_clearly(dashboard: Dashboard) -> None:
    """The local control plane's admin signs in with a client certificate, which discovery
    cannot review: svcreg ui says what to do instead of opening a page that cannot sign in."""
    env = {k: v for k, v in dashboard.cluster.env().items() if k != "SVCREG_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "ui", "--no-browser", "--url", dashboard.operator.url],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "--service-account" in refused.stderr
    unknown = subprocess.run(
        [
            sys.executable, "-m", "svcreg.cli", "ui", "--no-browser", "--url", dashboard.operator.url,
            "--service-account", f"{dashboard.ns}/nobody",
        ],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
