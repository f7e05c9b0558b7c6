"""Build the documentation site: execute the module notebooks, render them with MkDocs.

Usage: python scripts/build_docs.py [--site-dir _site] [--only core,data] [--workers 2] [--build-dir _docs_build]

Steps:
1. find the module notebooks (nbs/*.ipynb, not nbs/apps/ or nbs/pipeline/) and order them by
   LIFECYCLE, the module each one exports (`#| default_exp`); missing modules are skipped and
   modules not in the list come last, so notebooks being written elsewhere never break the build;
2. execute each one with execnb, as nbdev-test does (working directory nbs/), except cells
   flagged with a test flag from [tool.nbdev] tst_flags (`#| slow`, `#| cuda`) and `#| eval: false`
   cells, which are shown but not run;
3. turn nbdev directives into what a reader should see (hidden cells dropped, `#|` lines removed,
   `show_doc` after each exported definition, as nbdev's own processor adds it);
4. write the CLI reference (scripts/cli_reference.py) and copy the guide pages from docs/;
5. run `mkdocs build` (mkdocs.yml) into the site folder.

Outputs exist only in the built site, never in the committed notebooks: the sync check
(`nbdev-clean` changes nothing) stays quiet and an output can never be older than its code.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
BUILD = ROOT / "_docs_build"  # MkDocs' docs_dir: generated, gitignored

# The product loop, in the order a reader meets it (module names from `#| default_exp`).
LIFECYCLE = ["core", "db", "store", "collect", "annotate", "data", "train", "repro", "compress", "export",
             "registry", "serve", "evaluate", "pipeline", "cli", "testing"]
GUIDES = [("From notebook to production worker", "guide.md")]
SKIP_TAG = "skip-execution"  # the build leaves cells with this tag unexecuted (the name nbclient also honours)
REMOVE_INPUT_TAG = "remove_input"  # mkdocs-jupyter hides these cells' source (mkdocs.yml)
QUARTO_ATTRIBUTES = re.compile(r'\{target="_blank"[^}]*\}')
DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def directives(cell) -> dict[str, str]:
    "The nbdev directives (`#| name value`) at the top of a code cell."
    found = {}
    for line in cell.source.splitlines():
        match = DIRECTIVE.match(line)
        if match is None:
            if line.strip():
                break
            continue
        found[match.group(1)] = match.group(2)
    return found


def strip_directives(source: str) -> str:
    "The cell's source without its leading `#|` lines."
    lines = source.splitlines()
    while lines and (DIRECTIVE.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def exported_module(path: Path) -> str | None:
    "The module a notebook exports (`#| default_exp NAME`), or None for a page that exports nothing."
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and "default_exp" in directives(cell):
            return directives(cell)["default_exp"].split()[0]
    return None


def ordered_pages(only: list[str] | None = None) -> list[tuple[str, Path]]:
    "(module, notebook) pairs in lifecycle order; index first, unknown modules last, missing ones skipped."
    found = {}
    for path in sorted(NBS.glob("*.ipynb")):  # top level only: nbs/apps and nbs/pipeline are not pages
        module = exported_module(path) or path.stem
        found.setdefault(module, path)
    order = ["index", *LIFECYCLE, *sorted(set(found) - set(LIFECYCLE) - {"index"})]
    pages = [(module, found[module]) for module in order if module in found]
    if only is not None:
        unknown = set(only) - set(found)
        if unknown:
            raise SystemExit(f"build_docs: no notebook exports {', '.join(sorted(unknown))}")
        pages = [(module, path) for module, path in pages if module in only]
    return pages


def test_flags() -> set[str]:
    "The flags nbdev-test skips ([tool.nbdev] tst_flags): the build skips the same cells."
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config.get("tool", {}).get("nbdev", {}).get("tst_flags", "").split())


def mark_cells(notebook, flags: set[str]):
    "Tag cells the build must not run (test flags, `eval: false`) or must show without source."
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        found = directives(cell)
        tags = cell.metadata.setdefault("tags", [])
        if flags & set(found) or found.get("eval", "").lower() == "false":
            tags.append(SKIP_TAG)
        if found.get("echo", "").lower() == "false":
            tags.append(REMOVE_INPUT_TAG)
    return notebook


# show_doc evaluates string annotations; one naming a class defined further down the page fails
# where the cell is inserted, so such a definition falls back to its unevaluated signature.
SHOW_DOC_HELPER = '''import inspect as _inspect
from IPython.display import Markdown as _Markdown
from nbdev.showdoc import show_doc as _nbdev_show_doc

def show_doc(symbol):
    try:
        return _nbdev_show_doc(symbol)
    except NameError:
        name = getattr(symbol, "__qualname__", getattr(symbol, "__name__", str(symbol)))
        return _Markdown(f"### {name}\\n\\n```python\\n{name}{_inspect.signature(symbol)}\\n```\\n\\n"
                         + (_inspect.getdoc(symbol) or ""))
'''


def with_show_docs(path: Path):
    "The notebook with a `show_doc` cell after each exported definition, by nbdev's own processor."
    import json

    from nbdev.processors import NBProcessor, add_show_docs, nb2dict

    processor = NBProcessor(path, add_show_docs, rm_directives=False)  # keep `#|` lines: the build reads them
    processor.process()
    notebook = nbformat.reads(json.dumps(nb2dict(processor.nb)), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("show_doc("):
            cell.source = "#| echo: false\n" + cell.source
    notebook.cells.insert(0, nbformat.v4.new_code_cell("#| hide\n" + SHOW_DOC_HELPER))
    return notebook


def execute(path: Path, flags: set[str], timeout: int) -> tuple[Path, object, float]:
    "Run one notebook as nbdev-test does (execnb, in its folder, a fresh FSML_HOME); return it with outputs."
    import json

    from execnb.shell import CaptureShell, dict2nb, nb2dict

    notebook = dict2nb(json.loads(nbformat.writes(mark_cells(with_show_docs(path), flags))))
    if "fork" in multiprocessing.get_all_start_methods():  # a spawned worker defaults to spawn; libraries that
        multiprocessing.set_start_method("fork", force=True)  # share globals with a Pool (cleanlab) need fork
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fsml-docs-") as home:
        os.environ["FSML_HOME"] = home  # this process runs this one notebook only (max_tasks_per_child=1)
        for name in ("FSML_DB_URL", "FSML_BLOB_URL", "FSML_BROKER_URL", "MPLBACKEND"):
            os.environ.pop(name, None)
        os.chdir(path.parent)
        sys.path.insert(0, str(ROOT))  # this checkout's fsml_nb, as nbdev-test finds it
        shell = CaptureShell(path, mpl_format="png")
        shell.run_all(notebook, exc_stop=True, cell_timeout=timeout,
                      preproc=lambda cell: SKIP_TAG in cell.get("metadata", {}).get("tags", []))
    executed = nbformat.reads(json.dumps(nb2dict(notebook)), as_version=4)
    for cell in executed.cells:  # execnb's timings are numbers where nbformat's schema wants timestamps
        cell.metadata.pop("execution", None)
    return path, executed, time.perf_counter() - started


def for_readers(notebook):
    "Hidden cells dropped, directive lines removed, `output: false` outputs cleared."
    kept = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            kept.append(cell)
            continue
        found = directives(cell)
        if {"hide", "default_exp"} & set(found) or found.get("include", "").lower() == "false":
            continue
        if found.get("output", "").lower() == "false":
            cell.outputs = []
        for output in cell.get("outputs", []):
            markdown = output.get("data", {}).get("text/markdown")
            if markdown is not None:  # show_doc's source links carry Quarto-only attributes
                output["data"]["text/markdown"] = QUARTO_ATTRIBUTES.sub("", markdown)
        cell.source = strip_directives(cell.source)
        if cell.source.strip() or cell.get("outputs"):
            kept.append(cell)
    notebook.cells = kept
    return notebook


PAGE_LINK = re.compile(r"\]\((?P<page>[\w.-]+)\.(?:ipynb|md)(?P<anchor>#[^)\s]*)?\)")


def link_pages(notebook, at_root: bool, pages: set[str]):
    "Markdown links to other pages (`02_collect.ipynb`, `guide.md`) pointed at their URLs in the site."
    prefix = "" if at_root else "../"

    def url(match: re.Match) -> str:
        page = match.group("page")
        if page not in pages:
            print(f"  warning: a link to {match.group(0)[2:-1]} names no page of this build", flush=True)
            return match.group(0)
        target = prefix if page == "index" else f"{prefix}{page}/"
        return f"]({target or './'}{match.group('anchor') or ''})"

    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = PAGE_LINK.sub(url, cell.source)
    return notebook


def title_of(notebook, fallback: str) -> str:
    "The page title: the notebook's first `# heading`."
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def write_nav(pages: list[tuple[str, str]], guides: list[tuple[str, str]]) -> None:
    "mkdocs.yml reads the navigation from this generated file (INHERIT keeps the config in one place)."
    import yaml

    config = {"INHERIT": str(ROOT / "mkdocs.yml"), "docs_dir": str(BUILD / "docs"),
              "nav": [{"Home: the tour": page} for _, page in pages if page == "index.ipynb"]
              + [{"Modules": [{title: page} for title, page in pages if page != "index.ipynb"]}]
              + [{"Guides": [{title: page} for title, page in guides]}]
              + [{"CLI reference": "cli.md"}]}
    (BUILD / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def main() -> None:
    global BUILD  # --build-dir
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-dir", default=str(ROOT / "_site"), help="where the HTML goes")
    parser.add_argument("--only", help="comma-separated modules to build (default: every notebook)")
    parser.add_argument("--workers", type=int, default=2, help="notebooks executed at once")
    parser.add_argument("--build-dir", default=str(BUILD), help="where the executed pages go before rendering")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    arguments = parser.parse_args()
    BUILD = Path(arguments.build_dir).resolve()

    started = time.perf_counter()
    pages = ordered_pages(arguments.only.split(",") if arguments.only else None)
    if BUILD.exists():
        shutil.rmtree(BUILD)
    (BUILD / "docs").mkdir(parents=True)
    flags = test_flags()
    print(f"executing {len(pages)} notebooks ({arguments.workers} at a time; skipped flags: {' '.join(sorted(flags))})", flush=True)
    # one fresh process per notebook (like nbdev-test's workers): no state leaks from one page to the next
    with ProcessPoolExecutor(arguments.workers, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = [pool.submit(execute, path, flags, arguments.timeout) for _, path in pages]
        executed = {}
        for future in futures:
            path, notebook, seconds = future.result()
            executed[path] = notebook
            print(f"  {path.name:28} {seconds:6.1f} s", flush=True)
    nav = []
    built = {"index" if module == "index" else path.stem for module, path in pages} | {"cli"} | {
        Path(name).stem for _, name in GUIDES if (ROOT / "docs" / name).exists()}
    for module, path in pages:
        notebook = link_pages(for_readers(executed[path]), module == "index", built)
        page = "index.ipynb" if module == "index" else f"{path.stem}.ipynb"
        nbformat.write(notebook, BUILD / "docs" / page)
        nav.append((title_of(notebook, module), page))
    shutil.copy(ROOT / "docs" / "extra.css", BUILD / "docs" / "extra.css")
    guides = []
    for title, name in GUIDES:
        if (ROOT / "docs" / name).exists():
            shutil.copy(ROOT / "docs" / name, BUILD / "docs" / name)
            guides.append((title, name))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), str(BUILD / "docs" / "cli.md")],
                   check=True)
    write_nav(nav, guides)
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(BUILD / "mkdocs.yml"),
                    "--site-dir", str(Path(arguments.site_dir).resolve())], check=True, cwd=BUILD,
                   env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # cwd: mkdocs-jupyter caches in .cache/
    print(f"site in {arguments.site_dir}: {len(nav)} notebook pages, {len(guides)} guides, CLI reference; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
