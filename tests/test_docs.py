"""The documentation site: built pages show executed outputs and plots in a real browser.

The site is built by scripts/build_docs.py (two module pages and the CLI reference, so this
stays quick), or read from FSML_DOCS_SITE when a full build exists (CI builds the whole site
after the tests and runs this file on it).
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from fastcore import test as fastcore_test
from conftest import launch_chromium

ROOT = Path(__file__).resolve().parents[1]


def load_builder():
    "scripts/build_docs.py as a module (scripts/ is not a package)."
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts" / "build_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_notebook(path: Path, *sources: str) -> None:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources]), path)


def test_pages_follow_the_lifecycle_and_tolerate_missing_modules(tmp_path, monkeypatch):
    builder = load_builder()
    for name, module in [("90_testing", "testing"), ("05_train", "train"), ("00_core", "core"), ("99_extra", "extra")]:
        write_notebook(tmp_path / f"{name}.ipynb", f"#| default_exp {module}")
    write_notebook(tmp_path / "index.ipynb", "1 + 1")
    (tmp_path / "apps").mkdir()
    write_notebook(tmp_path / "apps" / "annotate.ipynb", "#| default_exp apps_annotate")
    monkeypatch.setattr(builder, "NBS", tmp_path)
    fastcore_test.test_eq([module for module, _ in builder.ordered_pages()], ["index", "core", "train", "testing", "extra"])
    fastcore_test.test_eq([module for module, _ in builder.ordered_pages(["train", "core"])], ["core", "train"])
    with pytest.raises(SystemExit, match="no notebook exports serve"):
        builder.ordered_pages(["serve"])


def test_slow_cells_are_shown_but_not_run_and_hidden_cells_are_dropped():
    builder = load_builder()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "#| slow\nreproduce_everything()", "#| eval: false\nserve_forever()", "#| hide\nsetup()",
        "#| echo: false\nshow_doc(fit)", "#|export\ndef fit(): pass", "print('shown')")])
    marked = builder.mark_cells(notebook, {"slow", "cuda"})
    fastcore_test.test_eq([cell.metadata.get("tags", []) for cell in marked.cells],
            [[builder.SKIP_TAG], [builder.SKIP_TAG], [], [builder.REMOVE_INPUT_TAG], [], []])
    shown = builder.for_readers(marked)
    fastcore_test.test_eq([cell.source for cell in shown.cells],
            ["reproduce_everything()", "serve_forever()", "show_doc(fit)", "def fit(): pass", "print('shown')"])


@pytest.fixture(scope="module")
def docs_site(tmp_path_factory) -> Path:
    "A built site: FSML_DOCS_SITE, or two module pages and the CLI reference built now."
    if os.environ.get("FSML_DOCS_SITE"):
        site = Path(os.environ["FSML_DOCS_SITE"])
        assert (site / "index.html").exists(), f"FSML_DOCS_SITE={site} holds no built site (no index.html)"
        return site
    try:
        import mkdocs  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
    except ImportError:  # test.sh installs the dev extras only; .ci/run builds the site and runs this file after
        pytest.skip("the docs tools are not installed (scripts/build-docs.sh installs the docs extra)")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_docs.py"), "--only", "core,data",
                    "--site-dir", str(site), "--build-dir", str(tmp_path_factory.mktemp("build"))], check=True, cwd=ROOT, env=env, timeout=1200)
    return site


@pytest.fixture(scope="module")
def site_url(docs_site: Path) -> Iterator[str]:
    "The built site served on 127.0.0.1, as a static host would."
    handler = functools.partial(QuietHandler, directory=str(docs_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *arguments) -> None:
        pass


def test_module_page_shows_executed_outputs_and_a_plot(site_url, chromium_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path)
        page = browser.new_page()
        response = page.goto(f"{site_url}/04_data/")
        fastcore_test.test_eq(response.status, 200)
        fastcore_test.test_eq(page.locator("h1").first.inner_text().strip(), "Data")
        outputs = page.locator(".jp-OutputArea-output")
        assert outputs.count() > 10, f"only {outputs.count()} outputs on the data page"
        # printed results of the worked examples, as the kernel returned them at build time
        assert "DatasetVersion(" in page.locator(".jupyter-wrapper").inner_text()
        tables = page.locator(".jp-OutputArea-output table")
        assert tables.count() >= 1, "no table among the data page's outputs"
        assert tables.first.locator("td").count() > 0
        plots = page.locator(".jp-RenderedImage img")
        assert plots.count() >= 1, "no plot on the data page"
        plots.first.scroll_into_view_if_needed()
        width = plots.first.evaluate("image => image.complete ? image.naturalWidth : 0")
        assert width > 100, f"the plot did not decode (natural width {width})"
        # nbdev directives are not shown to readers, and hidden cells are gone
        code = page.locator(".jp-InputArea").all_inner_texts()
        assert code and not any("#|" in text for text in code)
        browser.close()


def test_cli_reference_lists_every_command_help(site_url, chromium_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from fsml_nb.cli import app
    import typer

    group = typer.main.get_command(app)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path)
        page = browser.new_page()
        fastcore_test.test_eq(page.goto(f"{site_url}/cli/").status, 200)
        text = page.locator("article").inner_text()
        for name in group.list_commands(typer.Context(group)):
            assert f"Usage: fsml {name}" in text, f"no --help of `fsml {name}` on the CLI reference page"
        assert "Usage: fsml import folder" in text
        navigation = page.locator("nav.md-nav--primary").inner_text()
        assert navigation.index("Core") < navigation.index("Data"), "module pages are not in lifecycle order"
        browser.close()


def test_links_between_pages_point_at_site_urls():
    builder = load_builder()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [collect](02_collect.ipynb#crawler), the [guide](guide.md), the [tour](index.ipynb) "
        "and [a page being written](09_registry.ipynb).")])
    pages = {"index", "02_collect", "guide"}
    fastcore_test.test_eq(builder.link_pages(notebook, at_root=True, pages=pages).cells[0].source,
            "See [collect](02_collect/#crawler), the [guide](guide/), the [tour](./) "
            "and [a page being written](09_registry.ipynb).")
    notebook.cells[0].source = "[tour](index.ipynb), [guide](guide.md)"
    fastcore_test.test_eq(builder.link_pages(notebook, at_root=False, pages=pages).cells[0].source, "[tour](../), [guide](../guide/)")


def test_show_docs_are_added_and_directives_survive(tmp_path):
    builder = load_builder()
    write_notebook(tmp_path / "00_x.ipynb", "#| default_exp x", "#| hide\nsetup = 1", "#| export\ndef area(side): return side * side",
                   "#| slow\narea(10**9)")
    notebook = builder.mark_cells(builder.with_show_docs(tmp_path / "00_x.ipynb"), {"slow"})
    sources = [cell.source for cell in notebook.cells]
    assert sources[0].startswith("#| hide") and "def show_doc" in sources[0]  # the helper, hidden
    fastcore_test.test_eq(sources[1:], ["#| default_exp x", "#| hide\nsetup = 1", "#| export\ndef area(side): return side * side",
                                        "#| echo: false\nshow_doc(area)", "#| slow\narea(10**9)"])
    fastcore_test.test_eq(notebook.cells[-1].metadata.tags, [builder.SKIP_TAG])
    shown = builder.for_readers(notebook)
    fastcore_test.test_eq([cell.source for cell in shown.cells], ["def area(side): return side * side", "show_doc(area)",
                                                                  "area(10**9)"])
