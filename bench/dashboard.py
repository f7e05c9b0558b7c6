"""Benchmark: the evaluation dashboard in Chromium for an eval run of 10,000 items, cold and preheated kernels.

    python bench/dashboard.py [--items 10000] [--loads 3]

Two `fsml dashboard serve` servers run on the same store: one starts a kernel per request (`--preheat 0`, the
cold page), the other keeps one kernel preheated (`--preheat 1`: imports, store and the newest run's plots done
before the request). Each page load is timed from `goto` until the page is ready: the metrics, the plots and the
first gallery tiles on screen. A gallery filter is timed from the click on a confusion-matrix cell until the
gallery shows that cell's items, and a sort change until the first tile changes. Targets: ready <= 2 s with
preheated kernels, a filter <= 300 ms. The table gives medians (min-max) of `--loads` loads per server.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from evaluate import exported_model, many_digits  # noqa: E402  (bench/evaluate.py)

from fsml_nb.evaluate import add_viewer, evaluate_model  # noqa: E402
from fsml_nb.store import Store  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(home: Path, preheat: int) -> tuple[subprocess.Popen, int]:
    "`fsml dashboard serve` on a free port; the process (its own session) and the port, once it listens."
    port = free_port()
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("FSML_")}, "FSML_HOME": str(home)}
    fsml = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    server = subprocess.Popen([fsml, "dashboard", "serve", "--port", str(port), "--preheat", str(preheat),
                               "--cull-after", "2", "--max-kernels", "50"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, port
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the dashboard server (--preheat {preheat}) did not start")
        time.sleep(0.3)


def descendants(pid: int) -> list[int]:
    "Every process below `pid` (Linux /proc)."
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        children = [int(child) for child in path.read_text().split()] if path.exists() else []
        found += children
        stack += children
    return found


def kernels_cpu(server: subprocess.Popen) -> tuple[int, float]:
    "How many kernel processes the server runs, and their CPU seconds so far."
    count, ticks = 0, 0
    for pid in descendants(server.pid):
        try:
            if b"ipykernel" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        count += 1
        ticks += int(fields[11]) + int(fields[12])
    return count, ticks / os.sysconf("SC_CLK_TCK")


def wait_quiet(server: subprocess.Popen, kernels: int, timeout: float = 180.0) -> None:
    "Wait until exactly `kernels` kernels run and none used CPU for 1.5 s (a preheated one waits for its request)."
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        count, cpu = kernels_cpu(server)
        if count != kernels or cpu != last:
            last, since = cpu, time.monotonic()
        elif time.monotonic() - since >= 1.5:
            return
        time.sleep(0.25)
    raise SystemExit(f"the kernels did not settle to {kernels} within {timeout:.0f} s")


def time_page(browser, url: str) -> tuple[float, float, float]:
    "Seconds until the page is ready, then ms of two gallery filters (clicks on confusion-matrix cells)."
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("text=macro F1", timeout=180_000)
    page.wait_for_function("() => [...document.querySelectorAll('img')].some(i => i.naturalWidth > 300)"
                           " && [...document.querySelectorAll('.fsml-gallery img')].some(i => i.naturalWidth > 0)",
                           timeout=180_000, polling="raf")
    ready = time.perf_counter() - start
    filters = []
    for index in (0, 1):  # two confusion-matrix cells of wrong cases, one after the other
        cell = page.locator(".fsml-confusion button.fsml-wrong").nth(index)
        where = cell.get_attribute("title")  # "truth 3, predicted 5"
        start = time.perf_counter()
        cell.click()
        page.wait_for_function("(where) => document.body.innerText.includes('shown: ' + where)", arg=where,
                               polling="raf", timeout=60_000)
        filters.append(1000 * (time.perf_counter() - start))
    page.close()
    return ready, filters[0], filters[1]


def summary(values: list[float], scale: str) -> str:
    return f"{statistics.median(values):{scale}} ({min(values):{scale}}-{max(values):{scale}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
            version = many_digits(store, args.items)
            model = exported_model(Path(tmp), list(version.label_schema.classes))
            run = evaluate_model(model, version, "test", store=store, model_name="conv-untrained")
            token = add_viewer(store, "bench")
        servers = {preheat: start_server(home, preheat) for preheat in (0, 1)}
        results: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
                for _ in range(args.loads):
                    for preheat, (server, port) in servers.items():  # alternately, so load affects both alike
                        wait_quiet(server, kernels=preheat)  # no page kernel left; the pool (if any) waiting
                        results[preheat].append(time_page(browser, f"http://127.0.0.1:{port}/?token={token}"))
                browser.close()
        finally:
            for server, _ in servers.values():
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
    load = os.getloadavg()
    print(f"eval run {run.id[:12]}: {run.metrics['items']:,} items; {args.loads} loads per server; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| kernels | page ready, s | first gallery filter, ms | second gallery filter, ms |")
    print("| --- | ---: | ---: | ---: |")
    for preheat, label in ((0, "cold (one started per request)"), (1, "preheated (--preheat 1)")):
        rows = results[preheat]
        print(f"| {label} | {summary([r[0] for r in rows], '.2f')} | {summary([r[1] for r in rows], '.0f')} | "
              f"{summary([r[2] for r in rows], '.0f')} |")
    cold, warm = (statistics.median(r[0] for r in results[key]) for key in (0, 1))
    print(f"| preheated / cold ready time | {warm / cold:.2f}x | | |")
    print("targets: ready <= 2 s preheated; filter <= 300 ms")


if __name__ == "__main__":
    main()
