"""The wheel carries every module: build it, install it in a fresh environment, import everything."""
from __future__ import annotations

import pkgutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import fsml_nb

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_imports_every_module(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("fsml_nb-*.whl"))
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # the dependencies come from this environment's site-packages, appended after the fresh one,
    # so `fsml_nb` itself can only be found in the installed wheel
    fresh_site = next((fresh / "lib").glob("python*/site-packages"))
    (fresh_site / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    modules = sorted(name for _, name, _ in pkgutil.walk_packages(fsml_nb.__path__, "fsml_nb."))
    assert {"fsml_nb.core", "fsml_nb.store", "fsml_nb.data", "fsml_nb.cli"} <= set(modules)
    script = (f"import importlib, fsml_nb; assert str(fsml_nb.__file__).startswith({str(fresh)!r}), fsml_nb.__file__\n"
              f"for name in {modules!r}: importlib.import_module(name)\nprint('ok')")
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.stdout.strip() == "ok", result.stderr
    help_text = subprocess.run([str(fresh / "bin" / "fsml"), "--help"], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path)
    assert help_text.returncode == 0 and "import" in help_text.stdout
