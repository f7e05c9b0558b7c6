"""The `fsml` command as a user runs it: a real process, settings from the environment."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FSML = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"


def fsml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([FSML, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FSML_")}
    env.update(FSML_HOME=str(tmp_path / "home"), FSML_DB_URL=db_url, FSML_BLOB_URL=str(tmp_path / "blobs"))
    return env


def test_the_whole_foundation_from_the_shell(cli_env: dict[str, str], tmp_path: Path):
    assert fsml("init", env=cli_env).returncode == 0
    digits = fsml("import", "digits", env=cli_env)
    assert digits.returncode == 0, digits.stderr
    digits_id = digits.stdout.split()[0]
    assert fsml("import", "mnist1d", env=cli_env).returncode == 0

    listed = json.loads(fsml("versions", "--json", env=cli_env).stdout)
    assert {version["name"] for version in listed} == {"digits", "mnist1d"}
    shown = json.loads(fsml("version", "show", digits_id[:8], "--json", env=cli_env).stdout)
    assert shown["splits"] == {"test": 360, "train": 1437} and shown["label_schema"]["kind"] == "single_label"

    diff = json.loads(fsml("version", "diff", "digits", "mnist1d", "--json", env=cli_env).stdout)
    assert diff["added"] and diff["removed"] and len(diff["removed"]) == 1797
    assert fsml("version", "verify", "digits", env=cli_env).returncode == 0

    quick = fsml("quickstart", "--epochs", "0", env=cli_env)
    assert quick.returncode == 0 and "images (32, 1, 8, 8)" in quick.stdout


@pytest.mark.parametrize("args, message", [
    (("version", "show", "nope"), "no dataset version 'nope'"),
    (("version", "diff", "nope", "digits"), "no dataset version 'nope'"),
    (("import", "folder", "/no/such/folder"), "is not a folder"),
])
def test_user_errors_are_one_line(cli_env: dict[str, str], args, message):
    result = fsml(*args, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("fsml: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_line(tmp_path: Path):
    env = {**os.environ, "FSML_HOME": str(tmp_path), "FSML_DB_URL": "postgresql://fsml@127.0.0.1:1/fsml"}
    result = fsml("versions", env=env)
    assert result.returncode == 1 and "cannot reach the database at postgresql+psycopg://fsml@127.0.0.1:1/fsml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_damaged_version_fails_verify(cli_env: dict[str, str], tmp_path: Path):
    digits_id = fsml("import", "digits", env=cli_env).stdout.split()[0]
    blob = next(path for path in (tmp_path / "blobs").rglob("*") if path.is_file())
    blob.write_bytes(b"garbage")
    result = fsml("version", "verify", digits_id, env=cli_env)
    assert result.returncode == 1 and "1 corrupt blob(s)" in result.stderr


def test_listing_does_not_import_torch(tmp_path: Path):
    env = {**os.environ, "FSML_HOME": str(tmp_path)}
    code = "import sys; from fsml_nb.cli import main\ntry: main(['versions'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr
