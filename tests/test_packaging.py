"""The package as a user installs it: every import declared, and the wheel with its declared dependencies only.

Fast checks (always): every module-level import of the library is declared in pyproject.toml, the
map of extras in `fsml_nb.core` agrees with pyproject.toml, and the CLI prints a missing extra as
one line.

Packaging checks (marked `packaging`; they run when CI=true or FSML_TEST_PACKAGING=1, a few
minutes): build the wheel from the working tree, install it into a fresh virtual environment with
its declared dependencies only (base alone, then each extra; `constraints.txt` and the local pip
cache), import what each install allows, check that the modules needing a missing extra fail with
the one-line message, and run `fsml --help`. torch (a base dependency, 900 MB unpacked) is installed
once into a template environment that every fresh environment sees through a `.pth` line, so
pip finds it already satisfied; everything else is installed into each environment from scratch.
"""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fsml_nb.cli import app, main
from fsml_nb.core import EXTRA_OF_IMPORT

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = sorted(name for name in PROJECT["optional-dependencies"] if name != "dev")
LIBRARY_MODULES = sorted(f"fsml_nb.{path.stem}" for path in (ROOT / "fsml_nb").glob("*.py") if path.stem != "__init__")
MISSING_EXTRA_LINE = re.compile(r"fsml_nb\.\w+ needs (\w+): pip install 'fsml_nb\[(\w+)\]'")


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(Requirement(text).name) for text in requirements}


def module_level_imports(module: str) -> set[str]:
    "Top-level names a library module imports at module level (`fsml_nb.x` for the library's own modules)."
    path = ROOT / "fsml_nb" / f"{module.removeprefix('fsml_nb.')}.py"
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names.add(f"fsml_nb.{node.module.split('.')[0]}" if node.module else "fsml_nb")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            names.add(node.module if top == "fsml_nb" else top)
    return names - {"__future__"}


@cache
def extras_to_import(module: str) -> frozenset[str]:
    "The extras that `import module` needs, following the library's own module-level imports."
    needed: set[str] = set()
    for name in module_level_imports(module):
        if name.startswith("fsml_nb.") and name != module:
            needed |= extras_to_import(name)
        elif name in EXTRA_OF_IMPORT:
            needed.add(EXTRA_OF_IMPORT[name])
    return frozenset(needed)


@cache
def distributions_of_imports() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def providers(import_name: str) -> set[str]:
    "The distributions (in this environment) that provide the top-level import `import_name`."
    return {normalized(name) for name in distributions_of_imports().get(import_name, [])}


def requirement_closure(distributions: set[str]) -> set[str]:
    "The distributions that installing `distributions` brings, read from this environment's metadata."
    seen, todo = set(), list(distributions)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalized(requirement.name))
    return seen


def is_installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


# ---------------------------------------------------------------- fast checks


def test_every_module_level_import_is_declared():
    base = requirement_names(PROJECT["dependencies"])
    undeclared = {}
    for module in LIBRARY_MODULES:
        for name in module_level_imports(module):
            if name.startswith("fsml_nb") or name in sys.stdlib_module_names or name in EXTRA_OF_IMPORT:
                continue
            if not providers(name) & base:
                undeclared.setdefault(name, []).append(module)
    assert not undeclared, f"imported at module level but neither a base dependency nor in EXTRA_OF_IMPORT: {undeclared}"
    assert "fastcore" in base  # store, annotate and collect import it at module level


def test_the_extras_map_agrees_with_pyproject():
    extras = {name: requirement_names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    # An extra not installed here (docs: scripts/build-docs.sh installs it) has no metadata to follow;
    # the packaging check installs every extra into a fresh environment and imports its names there.
    checkable = {extra for extra in EXTRAS if all(is_installed(name) for name in extras[extra])}
    assert checkable >= set(EXTRAS) - {"docs"}, f"the dev environment lacks extras {set(EXTRAS) - checkable}"
    for name, extra in EXTRA_OF_IMPORT.items():
        assert extra in EXTRAS, f"EXTRA_OF_IMPORT[{name!r}] names {extra!r}, which pyproject.toml does not define"
        if extra in checkable:
            assert providers(name) & requirement_closure(extras[extra]), f"fsml_nb[{extra}] does not install {name}"
    mapped = set().union(*(providers(name) for name in EXTRA_OF_IMPORT))
    base = requirement_names(PROJECT["dependencies"])
    for extra in sorted(checkable):
        unmapped = extras[extra] - base - mapped
        assert not unmapped, f"fsml_nb[{extra}]: {unmapped} has no import name in EXTRA_OF_IMPORT"
    assert extras_to_import("fsml_nb.collect") == {"collect"}
    assert extras_to_import("fsml_nb.cli") == frozenset()  # `fsml --help` works on the base install


def test_the_cli_prints_a_missing_extra_as_one_line(monkeypatch, capsys):
    monkeypatch.setitem(EXTRA_OF_IMPORT, "fsml_nb_absent_package", "train")

    def needs_absent_package():
        exec("import fsml_nb_absent_package", {"__name__": "fsml_nb.cli"})

    app.command("needs-absent-package")(needs_absent_package)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["needs-absent-package"])
    finally:
        app.registered_commands.pop()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "fsml: error: fsml_nb.cli needs fsml_nb_absent_package: pip install 'fsml_nb[train]'\n"


# ---------------------------------------------------------------- packaging checks

RUN_PACKAGING = os.environ.get("CI", "").lower() == "true" or os.environ.get("FSML_TEST_PACKAGING") == "1"
PROBE = """
import importlib, json, sys
import fsml_nb, fsml_nb.core
fsml_nb.core.ensure_torchvision_ops()
def outcome(name):
    try:
        importlib.import_module(name)
        return "ok"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
modules = {name: outcome(name) for name in sys.argv[1:]}
imports = {name: outcome(name) for name in fsml_nb.core.EXTRA_OF_IMPORT}
print(json.dumps({"file": fsml_nb.__file__, "modules": modules, "imports": imports}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    "This process's environment without what would let the fresh environment see other code or stores."
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "FSML_", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    return env | {"PYTHONNOUSERSITE": "1"} | extra


def run(command: list[str | Path], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout,
                          env=kwargs.pop("env", clean_env()), **kwargs)


def pip_install(python: Path, *requirements: str | Path) -> None:
    # --no-compile: byte-compiling every installed file costs about 40% of the install; imports compile what they use
    result = run([python, "-m", "pip", "install", "-q", "--no-compile", "-c", ROOT / "constraints.txt", *requirements])
    assert result.returncode == 0, f"pip install {requirements} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    "The wheel, built from a copy of the working tree's package files (no stale build/ folder)."
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "fsml_nb", source / "fsml_nb", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    result = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    built = next(dist.glob("fsml_nb-*.whl"))
    names = set(zipfile.ZipFile(built).namelist())
    assert {f"{module.replace('.', '/')}.py" for module in LIBRARY_MODULES} <= names
    return built


@pytest.fixture(scope="session")
def torch_site(tmp_path_factory) -> Path:
    "site-packages of a template environment holding torch (pinned by constraints.txt) and its requirements."
    template = tmp_path_factory.mktemp("torch-template")
    venv.create(template, with_pip=True)
    pip_install(template / "bin" / "python", "torch")
    return next((template / "lib").glob("python*/site-packages"))


@pytest.fixture(scope="session")
def environments(tmp_path_factory, wheel: Path, torch_site: Path) -> Iterator:
    "Fresh environments with the wheel and its declared dependencies, one per extra set, made on first use."
    made: dict[str, Path] = {}

    def environment(extras: str) -> Path:
        if extras not in made:
            folder = tmp_path_factory.mktemp(f"venv-{extras or 'base'}")
            venv.create(folder, with_pip=True)
            site = next((folder / "lib").glob("python*/site-packages"))
            (site / "zz_torch_template.pth").write_text(f"{torch_site}\n")
            pip_install(folder / "bin" / "python", f"{wheel}[{extras}]" if extras else str(wheel))
            made[extras] = folder
        return made[extras]

    yield environment


@pytest.mark.packaging
@pytest.mark.skipif(not RUN_PACKAGING, reason="packaging tests run with CI=true or FSML_TEST_PACKAGING=1")
@pytest.mark.parametrize("extras", ["", *EXTRAS], ids=lambda extras: extras or "base")
def test_the_wheel_with_its_declared_dependencies(environments, extras: str, tmp_path: Path):
    folder = environments(extras)
    installed = {extras} - {""}
    python, fsml = folder / "bin" / "python", folder / "bin" / "fsml"
    probe = run([python, "-c", PROBE, *LIBRARY_MODULES], cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert report["file"].startswith(str(folder)), f"fsml_nb came from {report['file']}, not the fresh environment"

    for module, outcome in report["modules"].items():
        missing = extras_to_import(module) - installed
        if not missing:
            assert outcome == "ok", f"import {module} with fsml_nb[{extras}]: {outcome}"
        else:  # one line that names the extra to install
            match = MISSING_EXTRA_LINE.fullmatch(outcome.removeprefix("MissingExtraError: "))
            assert outcome.startswith("MissingExtraError: ") and match and match[2] in missing, outcome
    for name, extra in EXTRA_OF_IMPORT.items():
        if extra in installed:
            assert report["imports"][name] == "ok", f"fsml_nb[{extra}] should install {name}: {report['imports'][name]}"

    help_text = run([fsml, "--help"], cwd=tmp_path)
    assert help_text.returncode == 0 and "quickstart" in help_text.stdout, help_text.stderr

    home = clean_env(FSML_HOME=str(tmp_path / "home"))
    digits = run([fsml, "import", "digits"], cwd=tmp_path, env=home)
    if "datasets" in installed:
        assert digits.returncode == 0 and "digits  1797 items" in digits.stdout, digits.stderr
    elif report["imports"]["sklearn"] != "ok":  # a lazy import inside a function names its extra too
        assert digits.returncode == 1
        assert digits.stderr == "fsml: error: fsml_nb.data needs sklearn: pip install 'fsml_nb[datasets]'\n"
    if "collect" not in installed:
        crawl = run([fsml, "collect", "crawl", "http://127.0.0.1:9/", "--allow", "127.0.0.1"], cwd=tmp_path, env=home)
        assert crawl.returncode == 1 and crawl.stderr.startswith("fsml: error: fsml_nb.collect needs "), crawl.stderr
        match = MISSING_EXTRA_LINE.fullmatch(crawl.stderr.removeprefix("fsml: error: ").removesuffix("\n"))
        assert match and match[2] == "collect", crawl.stderr  # the first missing one: serve brings httpx
