#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium driven by Selenium.

Run by integration-tests/tests/dashboard.rs against a live control plane whose
first cluster has (at least) two members and whose writes need a token:

    .venv/bin/python integration-tests/browser/dashboard.py URL SCREENSHOT \
        [--token TOKEN] [--profile DIR]

It loads the page, sees both members, tries to drain the first one without a
token (the API's 401 must be on the page, as the API words it), enters the
token, drains it from the page and waits until the page shows it draining;
then two actions the API refuses (a member URL with HTML in it, which must
show as text and never become an element; a weight of 0), and waits until the
page shows every replica synced at the control plane's version. It saves a
screenshot of the whole page to SCREENSHOT, also when it fails, and prints
what it did as one JSON object on stdout for the Rust test to check.

Only Debian's /usr/bin/chromium and /usr/bin/chromedriver are used (nothing
is downloaded: the driver's path is given, so Selenium Manager never runs).
Exit codes: 0 passed, 1 failed (why on stderr), 2 the browser could not start.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20  # seconds, for each thing the page must come to show

# Selenium Manager must never look for (or download) a browser or a driver.
os.environ["SE_OFFLINE"] = "true"
os.environ.setdefault("SE_AVOID_STATS", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class Failed(Exception):
    pass


def log(message):
    print(f"[dashboard.py] {message}", file=sys.stderr, flush=True)


def api(base, method, path, body=None, token=None):
    """One REST call: (status, parsed JSON body). The script asks the API
    itself what it answers, to compare with what the page shows."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    # Only the control plane on 127.0.0.1, never a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def start_browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",  # as root (CI, containers) Chromium refuses to start without it
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        # Nothing leaves the machine: every host but 127.0.0.1 is unresolvable, and
        # anything that is not loopback would go to a proxy on a port where
        # nothing listens (loopback bypasses the proxy).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        # Nothing but the page under test: no update checks, sync, translation, metrics.
        "--no-first-run",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-breakpad",
        "--no-pings",
        "--safebrowsing-disable-auto-update",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(profile, "chromedriver.log"))
    return webdriver.Chrome(service=service, options=options)


def wait_for(driver, what, probe, timeout=WAIT):
    """Polls probe(driver) until it returns a true value; fails saying `what`
    and what the page showed."""
    last = None

    def attempt(d):
        nonlocal last
        try:
            value = probe(d)
        except StaleElementReferenceException:
            return False  # the page drew that part again: look once more
        last = value
        return value

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt)
    except TimeoutException:
        raise Failed(f"the page did not come to show {what} within {timeout} s (last seen: {last!r})")


def retrying(action, attempts=10):
    """Runs an action on elements the page may redraw (every second) meanwhile."""
    for attempt in range(attempts):
        try:
            return action()
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def css_string(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def member_rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#clusters article.card tr[data-member]")


def row_selector(member):
    return f"tr[data-member={css_string(member)}]"


def state_of(driver, member):
    cells = driver.find_elements(By.CSS_SELECTOR, row_selector(member) + " td.state")
    return cells[0].text.strip() if cells else None


def message(driver):
    """The action message: (kind, label, text) as shown."""
    box = driver.find_element(By.ID, "message")
    if not box.is_displayed():
        return None
    classes = box.get_attribute("class").split()
    kind = "error" if "error" in classes else "ok" if "ok" in classes else "?"
    return (
        kind,
        driver.find_element(By.ID, "message-label").text,
        driver.find_element(By.ID, "message-text").text,
    )


def expect_error(driver, what, expected):
    """Waits until the page shows `expected` (the API's error) as the refusal."""
    seen = {}

    def probe(d):
        seen["message"] = message(d)
        m = seen["message"]
        return m if m and m[0] == "error" and m[2] == expected else None

    try:
        shown = wait_for(driver, f"the API's error for {what}", probe)
    except Failed as error:
        raise Failed(f"{error}: expected the error {expected!r}, the page shows {seen.get('message')!r}")
    log(f"{what}: the page shows {shown[1]!r}: {shown[2]!r}")
    return shown[2]


def click(driver, selector):
    retrying(lambda: driver.find_element(By.CSS_SELECTOR, selector).click())


def fill(driver, selector, value):
    def action():
        field = driver.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(value)
        if field.get_attribute("value") != value:
            raise StaleElementReferenceException("the field was drawn again while typing")

    retrying(action)


def screenshot(driver, path):
    # The whole page, not just the window: a headless window does not grow
    # past its screen, so the viewport is set to the page's height instead.
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1440, "height": min(max(int(height), 700), 4000), "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(0.3)  # a frame at the new size; nothing is asserted after this
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not driver.save_screenshot(path):
        raise Failed(f"could not save the screenshot to {path}")
    log(f"screenshot saved to {path}")


def run(driver, base, token, result):
    driver.get(base + "/")
    title = driver.title
    if title != "Switchyard":
        raise Failed(f"the page's title is {title!r}, not the dashboard's")

    # Both members of the first cluster, as the API lists them.
    status, config = api(base, "GET", "/api/v1/config", token=token)
    if status != 200:
        raise Failed(f"GET /api/v1/config answered {status}: {config}")
    cluster = config["clusters"][0]
    members = [m["id"] for m in cluster["members"]]
    if len(members) < 2:
        raise Failed(f"cluster {cluster['name']} needs two members, has {members}")
    drained, kept = members[0], members[1]
    result.update(cluster=cluster["name"], drained=drained, kept=kept, version_before=config["version"])
    wait_for(
        driver,
        f"both members {members}",
        lambda d: sorted(r.get_attribute("data-member") for r in member_rows(d)) == sorted(members),
    )
    wait_for(driver, f"{drained} active", lambda d: state_of(d, drained) == "active")
    log(f"the page shows cluster {cluster['name']} with members {members}")

    path = f"/api/v1/clusters/{urllib.request.quote(cluster['name'], safe='')}/members/{urllib.request.quote(drained, safe='')}"
    drain_button = row_selector(drained) + ' button[data-action="drain"]'
    if token:
        # Without the token the API refuses the write: the page says what it said.
        click(driver, "#token-forget")
        status, refused = api(base, "PATCH", path, {"state": "draining"})
        if status != 401:
            raise Failed(f"a write without the token answered {status}: {refused}")
        click(driver, drain_button)
        result["unauthorized"] = expect_error(driver, "a drain without the token", refused["error"])
        if state_of(driver, drained) != "active":
            raise Failed("a refused drain shows as done")
        fill(driver, "#token", token)
        click(driver, '#token-form button[type="submit"]')
        wait_for(driver, "the token taken", lambda d: (m := message(d)) and m[0] == "ok" and "token" in m[2])

    # The drain itself.
    click(driver, drain_button)
    wait_for(driver, f"{drained} draining", lambda d: state_of(d, drained) == "draining")
    done = wait_for(
        driver, "the drain's answer", lambda d: (m := message(d)) and m[0] == "ok" and "draining" in m[2] and m
    )
    log(f"drained {drained}: the page says {done[2]!r}")
    result["drain_message"] = done[2]

    # A member URL with markup in it: the API quotes it, the page shows it as text.
    probe_url = 'http://<img src=x id=xss-probe onerror="document.title=1">'
    status, refused = api(
        base, "POST", f"/api/v1/clusters/{urllib.request.quote(cluster['name'], safe='')}/members",
        {"url": probe_url}, token=token,
    )
    if status != 400 or "<img" not in refused.get("error", ""):
        raise Failed(f"the probe URL answered {status}: {refused}")
    add_form = f'form.add-member[data-cluster={css_string(cluster["name"])}]'
    fill(driver, add_form + ' input[name="url"]', probe_url)
    click(driver, add_form + ' button[type="submit"]')
    result["url_error"] = expect_error(driver, "a member URL with markup", refused["error"])
    if driver.find_elements(By.CSS_SELECTOR, "#xss-probe, #message img, main img"):
        raise Failed("markup from an API error became an element")
    if driver.title != "Switchyard":
        raise Failed("a handler from an API error ran")
    # Done with that form (an empty field is its resting state).
    fill(driver, add_form + ' input[name="url"]', "")

    # A weight the API refuses: its words on the page, nothing changed (last,
    # so that the screenshot shows this message beside the refused field).
    weight_path = f"/api/v1/clusters/{urllib.request.quote(cluster['name'], safe='')}/members/{urllib.request.quote(kept, safe='')}"
    status, refused = api(base, "PATCH", weight_path, {"weight": 0}, token=token)
    if status != 400:
        raise Failed(f"weight 0 answered {status}: {refused}")
    fill(driver, row_selector(kept) + " input.weight-input", "0")
    click(driver, row_selector(kept) + ' form.weight-form button[type="submit"]')
    result["weight_error"] = expect_error(driver, "weight 0", refused["error"])

    # Every replica synced at the control plane's version, as the page shows them.
    status, config = api(base, "GET", "/api/v1/config", token=token)
    version = config["version"]
    result["version_after"] = version

    def replicas_synced(d):
        rows = d.find_elements(By.CSS_SELECTOR, "#replicas tbody tr[data-node]")
        seen = [(r.get_attribute("data-node"), r.get_attribute("data-state"), r.get_attribute("data-version")) for r in rows]
        ok = len(seen) >= 2 and all(s == "synced" and v == str(version) for _, s, v in seen)
        return ok and seen

    seen = wait_for(driver, f"every replica synced at version {version}", replicas_synced)
    result["replicas"] = [node for node, _, _ in seen]
    log(f"the page shows replicas {seen}")
    # How each replica sees the member that takes the traffic (from their
    # health reports), and when each was last heard from.
    wait_for(
        driver,
        f"{kept} healthy on both replicas",
        lambda d: [
            b.text for b in d.find_elements(By.CSS_SELECTOR, row_selector(kept) + " td.per-replica .badge")
        ] == ["healthy", "healthy"],
    )
    wait_for(
        driver,
        "a last-seen time for each replica",
        lambda d: all(
            c.text.endswith("ago") for c in d.find_elements(By.CSS_SELECTOR, "#replicas tbody tr[data-node] td:nth-child(6)")
        ),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the control plane's API, e.g. http://127.0.0.1:8080")
    parser.add_argument("screenshot", help="where to save the PNG")
    parser.add_argument("--token", default="", help="the API token writes need, if any")
    parser.add_argument("--profile", help="Chromium's user data dir (default: a fresh temp dir)")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    profile = args.profile or tempfile.mkdtemp(prefix="switchyard-chromium-")
    os.makedirs(profile, exist_ok=True)

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            log(f"{path} is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
            return 2
    try:
        driver = start_browser(profile)
    except WebDriverException as error:
        log(f"the browser did not start: {error.msg}")
        return 2

    result = {}
    code = 0
    try:
        run(driver, base, args.token or None, result)
    except (Failed, WebDriverException, KeyError, IndexError, ValueError) as error:
        code = 1
        log(f"FAILED: {error}")
        try:
            log("the page said:\n" + driver.find_element(By.TAG_NAME, "body").text[:3000])
            for entry in driver.get_log("browser")[-20:]:
                log(f"console: {entry.get('level')} {entry.get('message')}")
        except WebDriverException:
            pass
    try:
        screenshot(driver, args.screenshot)
        result["screenshot"] = os.path.abspath(args.screenshot)
    except (Failed, WebDriverException) as error:
        code = 1
        log(f"FAILED to save the screenshot: {error}")
    finally:
        driver.quit()
    print(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
