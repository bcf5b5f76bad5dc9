"""A screenshot of a store's `lin report`, in Debian's headless chromium (for docs/dashboard.md).

    python scripts/report_screenshot.py STORE OUT.png      (make docs-screenshot: the demo store)

The same browser and flags as tests/test_dashboard_browser.py; nothing is downloaded.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from lineagestore import Repo
from lineagestore.dashboard.report import write_report

WIDTH = 1280


def main(store: str, out: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        write_report(Repo.open(store), page)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars",
                  f"--window-size={WIDTH},1000", f"--user-data-dir={Path(tmp) / 'profile'}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        try:
            driver.get(page.as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "chart-loss").get_attribute("data-points"))
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(WIDTH, height + 140)  # the window's frame is counted in its size
            time.sleep(0.5)  # the charts redraw at the new size (a resize handler, debounced)
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(out)
        finally:
            driver.quit()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
