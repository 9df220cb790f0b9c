"""Drives dmon's dashboard in real headless Chromium (tests/dashboard.rs).

    python3 dashboard_check.py HTTP_PORT UDP_PORT SCREENSHOT_PATH [TOKEN]

With TOKEN (dmon runs with --http-token-file), only the token check runs:
the page, opened with the token as HTTP Basic credentials, must subscribe
and show a new event, as a browser sends those credentials on.

Near the end it prints RESTART and reads a line: the UDP port of the dmon
that the test has restarted on the same HTTP port.

The server runs a stream module that indexes every event (root "stream":
sdo(index(), where(...)))). Events go to it as JSON datagrams over UDP;
the page must show them within a second. Every wait has a deadline
(WebDriverWait), none is a sleep. Prints one "ok: ..." line per check and
exits 0, or prints why and exits 1 (with a screenshot beside the
artefact's path, and the browser's console).
"""

import json
import socket
import sys
import time
from urllib.parse import quote

from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# What the issue asks Chromium to be launched with.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The page must show an event this soon after it is sent.
WITHIN = 1.0
# Loading the page and its first subscription; the stream tree's rates (its
# poll is every 2 s, a rate needs two).
SLOW = 20.0

http_port, udp_port, screenshot = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
token = sys.argv[4] if len(sys.argv) > 4 else None
base = f"http://127.0.0.1:{http_port}"
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def send(**event):
    udp.sendto(json.dumps(event).encode(), ("127.0.0.1", udp_port))


def ok(what):
    print(f"ok: {what}", flush=True)


def row_selector(host, service):
    return f'#rows tr[data-host="{host}"][data-service="{service}"]'


def row(driver, host, service):
    found = driver.find_elements(By.CSS_SELECTOR, row_selector(host, service))
    return found[0] if found else None


def wait(driver, seconds, what, condition):
    try:
        # A row read while the table is rebuilt (a new query) is read again.
        return WebDriverWait(
            driver, seconds, poll_frequency=0.02, ignored_exceptions=[StaleElementReferenceException]
        ).until(
            lambda d: condition(d), message=what
        )
    except TimeoutException:
        raise AssertionError(f"not within {seconds} s: {what}") from None


def sent_and_shown(driver, what, condition, **event):
    """Sends `event`, then waits at most WITHIN for `condition`."""
    start = time.monotonic()
    send(**event)
    value = wait(driver, WITHIN, what, condition)
    ok(f"{what} ({(time.monotonic() - start) * 1000:.0f} ms after sending)")
    return value


def state_of(driver, host, service):
    r = row(driver, host, service)
    return r.get_attribute("data-state") if r else None


def spark_points(driver, host, service):
    """The polyline's points in the row's sparkline."""
    r = row(driver, host, service)
    if not r:
        return 0
    lines = r.find_elements(By.CSS_SELECTOR, "svg.spark polyline")
    if not lines:
        return len(r.find_elements(By.CSS_SELECTOR, "svg.spark circle"))
    return len(lines[0].get_attribute("points").split())


def status(driver):
    return driver.find_element(By.ID, "status").get_attribute("data-status")


def node_rate(driver, path):
    # Read in one script call: the tree's rows may be replaced between two
    # WebDriver calls.
    text = driver.execute_script(
        "const c = document.querySelector(`#nodes tr[data-path=\"${arguments[0]}\"] td.rate-in`);"
        "return c ? c.textContent : null;",
        path,
    )
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def node_paths(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#nodes tr')].map((r) => r.dataset.path);"
    )


def submit_query(driver, text):
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#query-form button").click()


def check(driver):
    driver.get(base + "/")
    wait(driver, SLOW, "the subscription is live", lambda d: status(d) == "live")
    ok("page loaded, subscription live")

    # A new event appears; its description is text, never markup.
    hostile = '<img src=x onerror="document.title=1">'
    sent_and_shown(
        driver,
        "a new event appears in the table",
        lambda d: state_of(d, "web1", "cpu") == "ok",
        host="web1", service="cpu", state="ok", metric=0.5, ttl=120, description=hostile,
    )
    web1 = row(driver, "web1", "cpu")
    assert web1.find_element(By.CSS_SELECTOR, "td.description").text == hostile
    assert not driver.find_elements(By.CSS_SELECTOR, "#rows img"), "event text became markup"
    assert web1.find_element(By.CSS_SELECTOR, "td.metric").text == "0.5"
    assert web1.find_element(By.CSS_SELECTOR, "td.ttl").text == "120 s"
    ok("event text shown as text")
    ok_colour = web1.value_of_css_property("background-color")

    # A second metric: the sparkline has two points.
    sent_and_shown(
        driver,
        "a second metric updates the row and its sparkline",
        lambda d: spark_points(d, "web1", "cpu") >= 2
        and row(d, "web1", "cpu").find_element(By.CSS_SELECTOR, "td.metric").text == "0.7",
        host="web1", service="cpu", state="ok", metric=0.7, ttl=120, description="load",
    )

    # ok -> critical recolours the row.
    sent_and_shown(
        driver,
        "a state change (ok -> critical) reaches the row",
        lambda d: state_of(d, "web1", "cpu") == "critical",
        host="web1", service="cpu", state="critical", metric=0.95, ttl=120, description="load",
    )
    critical_colour = row(driver, "web1", "cpu").value_of_css_property("background-color")
    assert critical_colour != ok_colour, (ok_colour, critical_colour)
    assert "critical" in row(driver, "web1", "cpu").get_attribute("class")
    ok(f"row recoloured: {ok_colour} -> {critical_colour}")

    send(host="web2", service="mem", state="warning", metric=81, ttl=120, description="high")
    send(host="web3", service="disk", state="ok", metric=12.5, ttl=120)
    send(host="db1", service="replication lag", metric=3, ttl=120)
    wait(driver, WITHIN, "more rows", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 4)
    hosts = [r.get_attribute("data-host") for r in driver.find_elements(By.CSS_SELECTOR, "#rows tr")]
    assert hosts == ["db1", "web1", "web2", "web3"], hosts
    ok("rows sorted by host")

    # The stream tree: the module's nodes, and a rate once traffic flows
    # (an event per look, while the page polls /stats).
    def busy(d):
        send(host="web2", service="mem", state="warning", metric=82, ttl=120, description="high")
        rate = node_rate(d, "stream/sdo/index")
        return rate is not None and rate > 0

    wait(driver, SLOW, "the index node's rate > 0 in the stream tree", busy)
    paths = node_paths(driver)
    assert paths == [
        "stream/sdo",
        "stream/sdo/index",
        "stream/sdo/where",
        "stream/sdo/where/printer",
    ], paths
    ok(f"stream tree {paths}, index at {node_rate(driver, 'stream/sdo/index')} events/s")

    # A bad query: its parse error shows, the subscription goes on.
    url_before = driver.current_url
    submit_query(driver, 'host = "web1" and')
    error = wait(
        driver,
        SLOW,
        "the parse error shows",
        lambda d: d.find_element(By.ID, "error").is_displayed()
        and d.find_element(By.ID, "error").text,
    )
    assert error.startswith("parse error at column"), error
    assert driver.current_url == url_before, driver.current_url
    assert status(driver) == "live"
    ok(f"bad query shows {error!r}")
    sent_and_shown(
        driver,
        "after the bad query, the old subscription still updates the table",
        lambda d: state_of(d, "web3", "disk") == "critical",
        host="web3", service="disk", state="critical", metric=99, ttl=120,
    )
    # An event whose ttl runs out: the index expires it, the subscription
    # says so, the row turns grey.
    sent_and_shown(
        driver,
        "a short-lived event appears",
        lambda d: state_of(d, "batch", "nightly job") == "ok",
        host="batch", service="nightly job", state="ok", metric=1, ttl=1,
    )
    wait(driver, SLOW, "the expired event greys its row",
         lambda d: state_of(d, "batch", "nightly job") == "expired")
    expired = row(driver, "batch", "nightly job")
    assert "state-expired" in expired.get_attribute("class")
    assert expired.find_element(By.CSS_SELECTOR, "td.metric").text == "1", "kept its metric"
    expired_colour = expired.value_of_css_property("background-color")
    assert expired_colour not in (ok_colour, critical_colour, "rgba(0, 0, 0, 0)"), expired_colour
    ok(f"expired row marked ({expired_colour})")
    driver.save_screenshot(screenshot)
    ok(f"screenshot {screenshot}")

    # A good query: narrows the table, the URL says it, and the sparkline
    # comes back from /series.
    submit_query(driver, 'service = "cpu"')
    wait(
        driver,
        SLOW,
        "the new query's subscription shows only cpu",
        lambda d: not d.find_element(By.ID, "error").is_displayed()
        and status(d) == "live"
        and [r.get_attribute("data-service") for r in d.find_elements(By.CSS_SELECTOR, "#rows tr")]
        == ["cpu"],
    )
    assert "query=service%20%3D%20%22cpu%22" in driver.current_url, driver.current_url
    wait(driver, SLOW, "the sparkline from /series", lambda d: spark_points(d, "web1", "cpu") >= 3)
    ok("new query narrows the table; its sparkline has the three recent points")
    sent_and_shown(
        driver,
        "a match of the new query appears",
        lambda d: state_of(d, "web9", "cpu") == "ok",
        host="web9", service="cpu", state="ok", metric=1,
    )

    # A link opens the same view.
    driver.get(base + "/?query=" + quote('host = "web2"', safe=""))
    wait(
        driver,
        SLOW,
        "the linked query's view",
        lambda d: status(d) == "live"
        and [r.get_attribute("data-host") for r in d.find_elements(By.CSS_SELECTOR, "#rows tr")]
        == ["web2"],
    )
    assert driver.find_element(By.ID, "query").get_attribute("value") == 'host = "web2"'
    assert state_of(driver, "web2", "mem") == "warning"
    ok("a link with ?query= opens that view")

    # No script error and no CSP violation on the way.
    problems = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and entry.get("source") in ("javascript", "security")
    ]
    assert not problems, problems
    ok("no script error or Content-Security-Policy violation in the console")

    # dmon restarts on the same HTTP port (and a new UDP port, read from
    # stdin): the page reconnects by itself, and its table goes on.
    opened = int(driver.find_element(By.ID, "status").get_attribute("data-opened"))
    print("RESTART", flush=True)
    global udp_port
    udp_port = int(sys.stdin.readline())
    wait(
        driver,
        SLOW,
        "the page resubscribes after the restart",
        lambda d: status(d) == "live"
        and int(d.find_element(By.ID, "status").get_attribute("data-opened")) > opened,
    )
    wait(
        driver,
        WITHIN,
        "no error left once resubscribed",
        lambda d: not d.find_element(By.ID, "error").is_displayed(),
    )
    ok("resubscribed after the server restarted")
    sent_and_shown(
        driver,
        "an event sent to the restarted server appears",
        lambda d: state_of(d, "web2", "mem") == "ok",
        host="web2", service="mem", state="ok", metric=40, ttl=120,
    )

    # A flood of new series: the table stops at its bound, says so, and
    # keeps updating the rows it shows.
    driver.get(base + "/")
    wait(driver, SLOW, "the subscription is live", lambda d: status(d) == "live")
    for batch in range(7):
        flood = [
            {"host": f"flood{batch * 100 + i:03}", "service": "x", "metric": i, "ttl": 120}
            for i in range(100)
        ]
        udp.sendto(json.dumps(flood).encode(), ("127.0.0.1", udp_port))
    wait(
        driver,
        SLOW,
        "the table stops at 500 rows and says so",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 500
        and d.find_element(By.ID, "rows-note").is_displayed(),
    )
    ok("a flood of 700 series shows 500 rows and a note: " + driver.find_element(By.ID, "rows-note").text)
    sent_and_shown(
        driver,
        "after the flood, a shown row still updates",
        lambda d: state_of(d, "web2", "mem") == "critical",
        host="web2", service="mem", state="critical", metric=99, ttl=120,
    )


def check_token(driver):
    """The page and its requests and WebSocket, with Basic credentials."""
    driver.get(f"http://dmon:{token}@127.0.0.1:{http_port}/")
    wait(driver, SLOW, "the subscription is live with the token", lambda d: status(d) == "live")
    ok("page loaded with the token, subscription live")
    sent_and_shown(
        driver,
        "a new event is shown through the token-guarded WebSocket",
        lambda d: row(d, "tok1", "cpu") is not None,
        host="tok1", service="cpu", state="ok", metric=1, ttl=60,
    )


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1400,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(SLOW)
    try:
        check_token(driver) if token else check(driver)
    except (AssertionError, WebDriverException) as e:
        print(f"FAILED: {e}", flush=True)
        try:
            driver.save_screenshot(screenshot.replace(".png", "-failed.png"))
            print("page:", driver.find_element(By.TAG_NAME, "body").text, flush=True)
            for entry in driver.get_log("browser"):
                print("console:", entry, flush=True)
        except WebDriverException:
            pass
        return 1
    finally:
        driver.quit()
    print("dashboard checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
