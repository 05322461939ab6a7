"""The studio in a real browser (headless Chromium through Selenium): how long the demo page takes to load, how long
the page takes to update after a move of r (median of 20 moves, target 300 ms), and the server's memory.

    python benchmarks/studio.py [--screenshot studio.png]

Needs the [studio] extra, selenium, and Debian's chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver).
``tests/test_studio.py`` drives the page with the same helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(session: Any, policy: Any = None) -> tuple[Any, str]:
    """``(app, url)``: the studio on ``session`` (saving as ``policy`` allows), served on a free 127.0.0.1 port in
    this process."""
    from hf_fcr.studio import build_app

    port = free_port()
    app = build_app(session=session, policy=policy)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return app, f"http://127.0.0.1:{port}/"


def browser() -> Any:
    """Headless Chromium (Debian's) through its chromedriver, with the network quiet (this machine has none)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2200", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def field(driver: Any, elem_id: str) -> Any:
    """The input (or textarea) of a Gradio component by its ``elem_id``."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")


def value(driver: Any, elem_id: str) -> str:
    return field(driver, elem_id).get_attribute("value") or ""


def text(driver: Any, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def wait(condition: Any, timeout: float = 120.0, every: float = 0.005) -> Any:
    """Poll ``condition()`` until it returns something truthy (an exception counts as not yet)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception:  # the element may not exist yet, or be replaced while read
            if time.perf_counter() > deadline:
                raise
        if time.perf_counter() > deadline:
            raise TimeoutError("the page did not reach the expected state")
        time.sleep(every)


def open_page(driver: Any, url: str) -> float:
    """Open the studio and wait for the verdict; returns the seconds it took."""
    t0 = time.perf_counter()
    driver.get(url)
    wait(lambda: text(driver, "verdict").strip() and value(driver, "worst_group"))
    return time.perf_counter() - t0


_WATCH = """
const box = document.querySelector('#r input[type=number]');
const shown = () => document.querySelector('#worst_group textarea, #worst_group input').value;
const before = shown();
window.__studio = {};
const onKey = e => {
  if (e.key === 'Enter') { window.__studio.start = performance.now(); box.removeEventListener('keydown', onKey); }
};
box.addEventListener('keydown', onKey);
(function poll() {
  if (shown() !== before && window.__studio.start !== undefined) window.__studio.end = performance.now();
  else requestAnimationFrame(poll);
})();
"""


def set_rate(driver: Any, r: float, timeout: float = 10.0) -> float | None:
    """Type ``r`` into the slider's number box and press Enter, as a user would; returns the seconds from the key
    press to the page showing a new worst group, measured in the page (``performance.now()``, so the test driver's
    own polling is not counted), or None when the worst group did not change within ``timeout``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#r input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    driver.execute_script(_WATCH)
    box.send_keys(f"{r:.3f}", Keys.ENTER)
    try:
        wait(lambda: driver.execute_script("return window.__studio.end !== undefined"), timeout=timeout, every=0.02)
    except TimeoutError:  # the same worst group at both rates: nothing to see change
        return None
    start, end = driver.execute_script("return [window.__studio.start, window.__studio.end]")
    return (end - start) / 1000


def measure(driver: Any, session: Any, moves: int = 20) -> list[float]:
    """Seconds per update over ``moves`` moves of r between rates whose validation worst group differs (moves whose
    worst group did not change are left out)."""
    grid = [row["r"] for row in session.curve().table]
    distinct, last = [], None
    for row in session.curve().table:
        if row["worst_group"] != last:
            distinct.append(row["r"])
            last = row["worst_group"]
    rates = (distinct if len(distinct) > 1 else grid)[: moves + 1]
    times = [set_rate(driver, rates[(i + 1) % len(rates)]) for i in range(moves)]
    return [t for t in times if t is not None]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--screenshot", default=None, help="save a PNG of the page there")
    p.add_argument("--output", default=None, help="write the figures as JSON there")
    args = p.parse_args(argv)
    import resource

    from hf_fcr.studio import StudioSession, StudioSource

    t0 = time.perf_counter()
    session = StudioSession.load(StudioSource())
    loaded = time.perf_counter() - t0
    app, url = serve(session)
    driver = browser()
    try:
        page = open_page(driver, url)
        times = measure(driver, session)
        if args.screenshot:
            set_rate(driver, session.chosen_r)
            time.sleep(1.0)  # the plots draw after the numbers
            driver.save_screenshot(args.screenshot)
    finally:
        driver.quit()
        app.close()
    results = {
        "session_load_s": loaded,
        "page_open_s": page,
        "update_median_ms": 1000 * statistics.median(times),
        "update_max_ms": 1000 * max(times),
        "moves": len(times),
        "server_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(results, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
