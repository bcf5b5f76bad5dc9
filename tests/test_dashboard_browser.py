"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; never a downloaded browser): the report as a file with the network off, the page of
`lin serve` redrawing as versions arrive, a phone's width, print.

These tests skip when no browser can start, unless LIN_REQUIRE_BROWSER=1 (.ci/run), which turns
the skip into a failure. Each chart's count is read from its DOM (data-points, set by the page's
script from what it drew) and compared with the count computed from the store itself.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from dashboard_stores import (
    COMMITTER,
    HOSTILE_FILE,
    ROOT,
    build_rich_store,
    build_store,
    expected_points,
    start_serve,
    stop_serve,
)

from lineagestore import Repo
from lineagestore.dashboard.report import write_report


@pytest.fixture
def store(tmp_path) -> Repo:
    return build_store(tmp_path / "s")


@pytest.fixture
def rich(tmp_path) -> Repo:
    return build_rich_store(tmp_path / "r")


# ------------------------------------------------------------------------------ a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    required = os.environ.get("LIN_REQUIRE_BROWSER") == "1"

    def unavailable(why: str):
        if required:
            pytest.fail(f"{why} (LIN_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(f"{why}; `make test` installs Debian's chromium and chromium-driver")

    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        unavailable("no /usr/bin/chromium or /usr/bin/chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--window-size=1280,1800",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    except Exception as e:  # noqa: BLE001 - any failure to start means: no browser here
        unavailable(f"chromium did not start: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_drawn(driver, expected: dict[str, int], timeout: float = 30) -> dict[str, str | None]:
    """The data-points attribute of each chart, once every one is set (the script ran)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def read(d):
        got = {k: d.find_element("id", k).get_attribute("data-points") if k.startswith("chart-")
               else d.find_element("css selector", "#lineage .body").get_attribute("data-points") for k in expected}
        return got if all(v is not None for v in got.values()) else False
    return WebDriverWait(driver, timeout).until(read)


def _png_pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, unfiltered rows) of an 8-bit non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), w * bpp, bytearray(), bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return w, h, bpp, bytes(out)


def _check_screenshot(driver, path: Path) -> None:
    """The screenshot is saved, and each chart's plotting area holds more than its background."""
    assert driver.save_screenshot(str(path))
    w, _h, bpp, px = _png_pixels(path.read_bytes())
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    for canvas in driver.find_elements("css selector", ".chart canvas"):
        r = canvas.rect
        colours = set()
        for y in range(int(r["y"] * ratio) + 2, int((r["y"] + r["height"]) * ratio) - 2, 3):
            for x in range(int(r["x"] * ratio) + 2, int((r["x"] + r["width"]) * ratio) - 2, 3):
                colours.add(px[(y * w + x) * bpp:(y * w + x) * bpp + 3])
        assert len(colours) > 3, f"chart {canvas.find_element('xpath', '../../..').get_attribute('id')} is blank"


def _pixels_of(element, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of ``element``'s own screenshot within ``tol`` of the colour ``rgb``."""
    w, h, bpp, px = _png_pixels(element.screenshot_as_png)
    return sum(1 for i in range(0, w * h * bpp, bpp)
               if all(abs(px[i + k] - rgb[k]) <= tol for k in range(3)))


def test_a_lone_eval_point_at_the_last_token_is_drawn(browser, tmp_path):
    """A store like the demo's: one trained version, evaluated once, at its last token, the same
    x as its last loss interval. Its red point must be on the canvas, not only in the counts."""
    from conftest import make_model_dir
    repo = Repo.init(tmp_path / "one" / ".lineage")
    base = repo.import_model(make_model_dir(tmp_path / "base"), "base")
    repo.write_commit(tree=repo.commit(base.id).tree, parents=[base.id], name="once", kind="train",
                      metrics={"tokens_trained": 1200, "wall_time_s": 3.0, "tokens_per_s": 400.0,
                               "loss_per_interval": [3.0, 2.8, 2.7], "eval_loss": 2.9})
    out = tmp_path / "one.html"
    write_report(repo, out)
    browser.get(out.as_uri())
    _wait_drawn(browser, expected_points(repo))
    canvas = browser.find_element("css selector", "#chart-loss canvas")
    assert _pixels_of(canvas, (0xdc, 0x26, 0x26)) > 10  # the eval series' colour, drawn


def _severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _statuses(driver, suffix: str) -> list[int]:
    """HTTP statuses of the responses to URLs ending in ``suffix`` since the log was last read."""
    out = []
    for e in driver.get_log("performance"):
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.responseReceived" and msg["params"]["response"]["url"].endswith(suffix):
            out.append(msg["params"]["response"]["status"])
    return out


def _http_requests(driver, log: list | None = None) -> list[str]:
    urls = []
    for e in driver.get_log("performance") if log is None else log:
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if url.startswith(("http:", "https:")):
                urls.append(url)
    return urls


def test_report_in_chromium_offline(browser, rich, tmp_path):
    store = rich
    out = tmp_path / "report.html"
    write_report(store, out)
    assert HOSTILE_FILE not in out.read_text()
    browser.get_log("performance")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        browser.get(out.as_uri())
        exp = expected_points(store)
        got = _wait_drawn(browser, exp)
        assert {k: int(v) for k, v in got.items()} == exp
        assert browser.title != "owned" and _severe(browser) == []
        assert _http_requests(browser) == []
        _check_screenshot(browser, tmp_path / "report.png")
        _hover_names_a_version(browser, store)
        queue_text = browser.find_element("css selector", "#queue .body").text
        assert HOSTILE_FILE in queue_text  # shown as the text it is
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                                {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})


def _hover_names_a_version(driver, store: Repo) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    over = driver.find_element("css selector", "#chart-loss .u-over")
    ActionChains(driver).move_to_element_with_offset(over, over.rect["width"] // 2 - 2, 0).perform()
    tip = driver.find_element("id", "tip").text
    assert any(tip.startswith(v) for v in store.versions()), tip
    assert "training loss: " in tip or "eval loss: " in tip


def test_report_on_a_phone_and_empty_store(browser, tmp_path):
    """An empty store draws empty states without errors, in a phone-sized window."""
    repo = Repo.init(tmp_path / "e" / ".lineage")
    out = tmp_path / "empty.html"
    write_report(repo, out)
    browser.set_window_size(390, 844)
    try:
        browser.get(out.as_uri())
        got = _wait_drawn(browser, {"chart-tokens": 0, "chart-loss": 0, "chart-throughput": 0, "lineage": 0})
        assert set(got.values()) == {"0"} and _severe(browser) == []
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390 + 1, width  # nothing wider than the phone
    finally:
        browser.set_window_size(1280, 1800)


def test_report_prints(browser, store, tmp_path):
    """In print the panels stack one under the other, and the page prints to a PDF."""
    import base64
    out = tmp_path / "print.html"
    write_report(store, out)
    browser.get(out.as_uri())
    _wait_drawn(browser, expected_points(store))
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert browser.execute_script("return getComputedStyle(document.querySelector('main')).display") == "block"
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    pdf = base64.b64decode(browser.print_page())
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert _severe(browser) == []


def test_served_page_redraws_while_versions_arrive(browser, store, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    p, info = start_serve(store, "--refresh", "1")
    try:
        browser.get(info["url"])
        exp = expected_points(store)
        assert {k: int(v) for k, v in _wait_drawn(browser, exp).items()} == exp
        subprocess.run([sys.executable, "-c", COMMITTER, str(store.path), "2"], cwd=ROOT, check=True, timeout=120)
        store.refs = Repo.open(store.path).refs
        # v007 and v008 go on main after v005: the page picks them up by itself
        exp = expected_points(Repo.open(store.path))
        WebDriverWait(browser, 60).until(
            lambda d: {k: int(v or -1) for k, v in _wait_drawn(d, exp).items()} == exp)
        assert _severe(browser) == []
        log = browser.get_log("performance")
        assert all(u.startswith(info["url"]) for u in _http_requests(browser, log))
        time.sleep(2.5)  # two more polls of unchanged figures
        statuses = _statuses(browser, "data.json")
        assert 304 in statuses and set(statuses) <= {200, 304}  # an unchanged poll is revalidated, not resent
        _check_screenshot(browser, tmp_path / "served.png")
    finally:
        stop_serve(p)
