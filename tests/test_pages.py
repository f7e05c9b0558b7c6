"""The stakeholders' pages in a real browser: the dashboard (confusion -> gallery -> item, comparison) and the
demo (upload, draw, bad upload), opened with view tokens; no kernel left once the pages close.

Screenshots go to test-artifacts/ (or $FSML_TEST_ARTIFACTS) so a reviewer can look at what the browser saw."""
from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import child_processes, free_port, kernel_processes, launch_chromium, local_server, skip_or_fail, wait_for
from PIL import Image
from torch import nn

from fsml_nb.data import import_digits
from fsml_nb.evaluate import add_viewer, evaluate_model
from fsml_nb.export import export_onnx
from fsml_nb.store import Store
from fsml_nb.train import TrainConfig, fit

ARTIFACTS = Path(os.environ.get("FSML_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")


def mlp_onnx(store: Store, version, folder: Path, steps: int) -> Path:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(network, version, store=store, config=TrainConfig(max_steps=steps, lr=3e-3, val_fraction=0.0))
    path = folder / f"mlp-{steps}.onnx"
    export_onnx(network.eval(), torch.zeros(1, 1, 8, 8), path, metadata={"fsml.classes": list(version.label_schema.classes), "fsml.preprocessing": {"input_shape": [1, 8, 8]}})
    return path


@pytest.fixture(scope="module")
def pages_home(tmp_path_factory) -> tuple[Path, str, Path]:
    "A store with digits, two evaluated models and a viewer; its FSML_HOME, the view token and the better model."
    home = tmp_path_factory.mktemp("pages") / "home"
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        digits = import_digits(store)
        weak, strong = mlp_onnx(store, digits, home, 40), mlp_onnx(store, digits, home, 300)
        evaluate_model(weak, digits, "test", store=store, model_name="mlp-40")
        evaluate_model(strong, digits, "test", store=store, model_name="mlp-300")
        token = add_viewer(store, "stakeholder")
    return home, token, strong


def serve_page(home: Path, page: str, *options: str):
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("FSML_")}, "FSML_HOME": str(home)}
    port = free_port()
    fsml = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    return port, local_server([fsml, page, "serve", "--port", str(port), "--cull-after", "3", *options], port, env)


def voila_of(server) -> int:
    "The Voila process under `fsml dashboard|demo serve` (its kernels are Voila's children)."
    if not Path("/proc/self/status").exists():
        skip_or_fail("counting kernel processes needs /proc (Linux)")
    wait_for(lambda: any(b"voila" in Path(f"/proc/{child}/cmdline").read_bytes() for child in child_processes(server.pid)),
             what="voila to start")
    return next(child for child in child_processes(server.pid) if b"voila" in Path(f"/proc/{child}/cmdline").read_bytes())


def preheated_floor(voila: int, pool: int = 1) -> int:
    "The kernels Voila runs with no page open: its preheated pool (`--preheat`, 1 by default), once started."
    wait_for(lambda: len(kernel_processes(voila)) == pool, timeout=120, what="the preheated kernel")
    return pool


def test_the_dashboard_leads_from_the_confusion_matrix_to_an_item(chromium_path: str, pages_home):
    from playwright.sync_api import sync_playwright

    home, token, _ = pages_home
    ARTIFACTS.mkdir(exist_ok=True)
    port, server_context = serve_page(home, "dashboard")
    with server_context as server, sync_playwright() as playwright:
        voila = voila_of(server)
        floor = preheated_floor(voila)
        browser = launch_chromium(playwright, chromium_path)
        refused = browser.new_page()
        refused.goto(f"http://127.0.0.1:{port}/?token=wrong")
        refused.wait_for_selector("text=Access refused", timeout=120_000)
        refused.close()
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"http://127.0.0.1:{port}/?token={token}", timeout=90_000)  # a Voila page's first load can take over 30 s on 2 busy cores
        page.wait_for_selector("text=Model evaluation", timeout=120_000)
        page.wait_for_selector("text=macro F1", timeout=60_000)
        assert page.locator("img").count() >= 1  # the confusion / reliability plots
        cell = page.locator(".fsml-confusion button.fsml-wrong").first  # a cell off the diagonal: wrong cases
        where = cell.get_attribute("title")  # "truth 3, predicted 5"
        cell.click()
        page.wait_for_selector(f"text=item(s) shown: {where}", timeout=60_000)
        tiles = page.locator(".fsml-gallery button.fsml-tile")
        wait_for(lambda: tiles.count() >= 1, what="the gallery")
        first = tiles.first
        assert first.locator("img").evaluate("image => image.naturalWidth") > 0  # the thumbnail drew
        truth, predicted = where.removeprefix("truth ").split(", predicted ")
        assert first.inner_text().strip().startswith(f"{truth}->{predicted}")
        first.click()  # the item view (the header's metrics also say "top-3": wait for the item's own line)
        wait_for(lambda: f"truth {truth} predicted {predicted}" in page.inner_text("body"), timeout=60,
                 what="the item view")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        compare = page.locator(".widget-dropdown", has_text="compare").locator("select")
        compare.select_option(index=1)
        page.wait_for_selector("text=McNemar", timeout=60_000)
        page.close()
        browser.close()
        wait_for(lambda: len(kernel_processes(voila)) == floor, timeout=90, what="the page's kernel to end")


def upload(page, path: Path) -> None:
    "Choose a file through the upload button, as a person does (ipywidgets keeps its file input off the page)."
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload").click()
    chooser.value.set_files(str(path))


def test_the_demo_predicts_uploads_and_drawings_and_refuses_non_images(chromium_path: str, pages_home, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    home, token, model = pages_home
    picture = tmp_path / "seven.png"
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buffer, format="PNG")
    picture.write_bytes(buffer.getvalue())
    (tmp_path / "notes.txt").write_text("not a picture")
    port, server_context = serve_page(home, "demo", "--model", str(model))
    with server_context as server, sync_playwright() as playwright:
        voila = voila_of(server)
        floor = preheated_floor(voila)
        browser = launch_chromium(playwright, chromium_path)
        page = browser.new_page(viewport={"width": 1000, "height": 1200})
        page.goto(f"http://127.0.0.1:{port}/?token={token}", timeout=90_000)  # a Voila page's first load can take over 30 s on 2 busy cores
        page.wait_for_selector("text=Try the model", timeout=120_000)
        upload(page, picture)
        page.wait_for_selector("text=prediction:", timeout=60_000)
        assert "model version" in page.inner_text("body")
        for cell in (3, 4, 11, 19, 27, 34, 42, 50):
            page.locator(".widget-toggle-button").nth(cell).click()
        page.locator("button", has_text="classify drawing").click()
        page.wait_for_selector("text=prediction:", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        upload(page, tmp_path / "notes.txt")
        page.wait_for_selector("text=not an image", timeout=60_000)
        page.close()
        browser.close()
        wait_for(lambda: len(kernel_processes(voila)) == floor, timeout=90, what="the page's kernel to end")
