"""The `fsml` command as a user runs it: a real process, settings from the environment."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.mark.parametrize("args, kind, message", [
    (("version", "show", "nope", "--json"), "UnknownVersionError", "no dataset version 'nope'"),
    (("registry", "show", "nope:3", "--json"), "UnknownModelVersionError", "no registered model 'nope'"),
    (("check", "mlp:1", "--card", "/no/card.toml", "--json"), "CardError", "no requirements card at /no/card.toml"),
])
def test_a_failure_with_json_is_one_json_object_on_stdout(cli_env: dict[str, str], args, kind, message):
    result = fsml(*args, env=cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
    failure = json.loads(result.stdout)
    assert failure["kind"] == kind and failure["error"].startswith(message), failure
    assert result.stderr == f"fsml: error: {failure['error']}\n"  # the same one line as without --json
    without = fsml(*[arg for arg in args if arg != "--json"], env=cli_env)
    assert (without.returncode, without.stdout, without.stderr) == (1, "", result.stderr)


@pytest.mark.parametrize("args, kind, message", [
    (("versions", "--json", "--no-such-option"), "NoSuchOption", "No such option: --no-such-option"),
    (("version", "show", "--json"), "MissingParameter", "Missing argument 'ref'"),
    (("gc", "--min-age", "soon", "--json"), "BadParameter", "Invalid value for '--min-age'"),
])
def test_a_usage_error_with_json_is_a_json_object_too(tmp_path: Path, args, kind, message):
    "Exit status 2 and click's usage on stderr, as without --json; and the JSON object on stdout."
    env = {**os.environ, "FSML_HOME": str(tmp_path)}
    result = fsml(*args, env=env)
    assert result.returncode == 2 and "Usage: fsml" in result.stderr, (result.returncode, result.stderr)
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
    failure = json.loads(result.stdout)
    assert failure["kind"] == kind and failure["error"].startswith(message), failure
    without = fsml(*[arg for arg in args if arg != "--json"], env=env)
    assert (without.returncode, without.stdout) == (2, "") and "Usage: fsml" in without.stderr


def test_an_unreachable_database_with_json_is_a_json_object(tmp_path: Path):
    env = {**os.environ, "FSML_HOME": str(tmp_path), "FSML_DB_URL": "postgresql://fsml@127.0.0.1:1/fsml"}
    result = fsml("versions", "--json", env=env)
    failure = json.loads(result.stdout)
    assert result.returncode == 1 and failure["kind"] == "DatabaseUnavailableError"
    assert failure["error"].startswith("cannot reach the database at postgresql+psycopg://fsml@127.0.0.1:1/fsml")
    assert len(result.stderr.strip().splitlines()) == 1


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


# --- issue 9 §3.7 and §3.8: errors are one line, nothing half-written; `fsml gc` -------------------------------

PROGRESS_BAR = re.compile(r"^[^|]*: *\d+%\|.*\| \d+/\d+ \[")  # tqdm's line, e.g. "import pets: 75%|███  | 3/4 [00:00<..."


def one_error_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    "Assert `result` failed with a single `fsml: error:` line containing each of `expected`; return it."
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS_BAR.match(line)]
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("fsml: error:"), result.stderr
    message = lines[0]
    assert "Traceback" not in message and all(words in message for words in expected), message
    return message


def image_folder(root: Path, count: int = 3, side: int = 4, noise: bool = False) -> Path:
    "A folder of `count` distinct PNG images in two class folders."
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for index in range(count):
        (root / ("cat" if index % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 256, (side, side, 3), dtype=np.uint8) if noise else \
            np.full((side, side, 3), index, dtype=np.uint8)
        Image.fromarray(pixels).save(root / ("cat" if index % 2 else "dog") / f"{index}.png", compress_level=0)
    return root


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.mark.parametrize("url, expected", [
    ("postgresql://bob:s3cretpw@127.0.0.1:notaport/fsml", "not a database URL"),
    ("postgresql://bob:s3cretpw@127.0.0.1:5432:5432/fsml", "not a database URL"),
    ("postgresql://bob:s3cretpw@[127.0.0.1/fsml", "cannot reach the database"),
])
def test_a_malformed_database_url_never_prints_its_password(url: str, expected: str, tmp_path: Path):
    env = {**os.environ, "FSML_HOME": str(tmp_path), "FSML_DB_URL": url}
    message = one_error_line(fsml("versions", env=env), expected)
    assert "s3cretpw" not in message and "***@" in message


@pytest.mark.parametrize("contents", [b"", b"not a database\n" * 50])
def test_a_damaged_sqlite_file_is_one_line(contents: bytes, tmp_path: Path):
    path = tmp_path / "fsml.db"
    path.write_bytes(contents)
    env = {**os.environ, "FSML_HOME": str(tmp_path), "FSML_DB_URL": f"sqlite:///{path}"}
    one_error_line(fsml("versions", env=env), str(path))
    assert path.read_bytes() == contents


@pytest.mark.parametrize("blob_url, expected", [("s3://fsml-bucket/blobs", "s3fs"),
                                                ("nosuchprotocol://bucket/blobs", "nosuchprotocol")])
def test_an_unusable_blob_url_is_one_line(blob_url: str, expected: str, tmp_path: Path):
    env = {**os.environ, "FSML_HOME": str(tmp_path), "FSML_DB_URL": f"sqlite:///{tmp_path}/fsml.db",
           "FSML_BLOB_URL": blob_url}
    one_error_line(fsml("versions", env=env), blob_url, expected)


def mount_or_skip(*arguments: str) -> None:
    "Run `mount ARGUMENTS`, or skip the test where that is not allowed (it needs root: CAP_SYS_ADMIN)."
    if os.geteuid() != 0 or subprocess.run(["mount", *arguments], capture_output=True).returncode != 0:
        pytest.skip("this test mounts a file system, which needs root (CAP_SYS_ADMIN)")


@contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[None]:
    "A tmpfs at `folder`: a small one is a real full disk, a read-only one a real read-only folder, even for root."
    folder.mkdir(parents=True, exist_ok=True)
    mount_or_skip("-t", "tmpfs", "-o", options, "tmpfs", str(folder))
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextmanager
def made_read_only(folder: Path) -> Iterator[None]:
    "`folder`, with what it holds, read-only (a read-only bind mount of it over itself)."
    mount_or_skip("--bind", str(folder), str(folder))
    try:
        mount_or_skip("-o", "remount,ro,bind", str(folder))
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_blob_folder_is_one_line(cli_env: dict[str, str], tmp_path: Path):
    folder = image_folder(tmp_path / "pets")
    with mounted_tmpfs(tmp_path / "blobs", "ro,size=1m"):
        one_error_line(fsml("import", "folder", str(folder), env=cli_env), "cannot write to the blob store",
                       "Read-only file system")
    assert json.loads(fsml("versions", "--json", env=cli_env).stdout) == []


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(cli_env: dict[str, str], tmp_path: Path):
    folder = image_folder(tmp_path / "noise", count=4, side=300, noise=True)  # 4 x 270 kB, the disk holds 1 MB
    with mounted_tmpfs(tmp_path / "blobs", "size=1m"):
        one_error_line(fsml("import", "folder", str(folder), env=cli_env), "no space left on device")
        assert files_under(tmp_path / "blobs") == []  # no .tmp-* file, and no blob of the failed import
    assert json.loads(fsml("versions", "--json", env=cli_env).stdout) == []


def test_values_longer_than_their_column_are_one_line(cli_env: dict[str, str], tmp_path: Path):
    folder = image_folder(tmp_path / "pets")
    one_error_line(fsml("import", "folder", str(folder), "--name", "n" * 300, env=cli_env),
                   "the version name is 300 characters long, over the limit of 255")
    deep = tmp_path / ("d" * 100) / ("e" * 100) / ("f" * 60)  # the folder's path names the labels' source
    image_folder(deep)
    one_error_line(fsml("import", "folder", str(deep), "--name", "deep", env=cli_env), "the label source is",
                   "over the limit of 255")
    assert json.loads(fsml("versions", "--json", env=cli_env).stdout) == []
    assert files_under(tmp_path / "blobs") == []


def test_gc_lists_then_removes_orphans_and_temporary_files_only(cli_env: dict[str, str], tmp_path: Path):
    from fsml_nb.store import NewItem, Store

    folder = image_folder(tmp_path / "pets")
    assert fsml("import", "folder", str(folder), env=cli_env).returncode == 0
    with Store(cli_env["FSML_DB_URL"], cli_env["FSML_BLOB_URL"]) as store:
        kept = {path.name for path in files_under(tmp_path / "blobs")}
        orphan, _ = store.blobs.put(b"bytes no row names")
        temporary = Path(store.blobs.path(orphan) + ".tmp-5a5a5a")
        temporary.write_bytes(b"an interrupted write")
        named = store.add_items([NewItem(b"an item in no version is still named by its row", "text/plain")])[0]

    young = json.loads(fsml("gc", "--json", env=cli_env).stdout)
    assert (young["orphans"], young["temporary_files"], young["removed"]) == ([], [], False)  # younger than 1 h

    listed = fsml("gc", "--min-age", "0", env=cli_env)
    assert listed.returncode == 0 and orphan in listed.stdout and str(temporary) in listed.stdout
    assert "dry run" in listed.stdout and temporary.exists() and Path(store.blobs.path(orphan)).exists()

    removed = json.loads(fsml("gc", "--min-age", "0", "--apply", "--json", env=cli_env).stdout)
    assert (removed["orphans"], removed["temporary_files"], removed["removed"]) == ([orphan], [str(temporary)], True)
    left = {path.name for path in files_under(tmp_path / "blobs")}
    assert left == kept | {named}
    assert fsml("version", "verify", "pets", env=cli_env).returncode == 0


def test_gc_on_a_read_only_blob_folder_is_one_line(cli_env: dict[str, str], tmp_path: Path):
    from fsml_nb.store import Store

    with Store(cli_env["FSML_DB_URL"], cli_env["FSML_BLOB_URL"]) as store:
        orphan, _ = store.blobs.put(b"bytes no row names")
        orphan_path = Path(store.blobs.path(orphan))
    with made_read_only(tmp_path / "blobs"):
        one_error_line(fsml("gc", "--min-age", "0", "--apply", env=cli_env), "cannot write to the blob store",
                       "Read-only file system")
    assert orphan_path.exists()


def test_a_full_disk_under_the_database_is_one_line_never_called_damage(cli_env: dict[str, str], tmp_path: Path):
    "Creating the schema, or committing an import, on a full disk: one line; the file is not 'damaged'."
    from fsml_nb.db import DatabaseError, DatabaseDamagedError
    from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store

    database = tmp_path / "database"
    env = {**cli_env, "FSML_DB_URL": f"sqlite:///{database}/fsml.db"}
    with mounted_tmpfs(database, "size=64k"):  # too small for the schema
        message = one_error_line(fsml("versions", env=env), "database or disk is full")
        assert "damaged" not in message
    with mounted_tmpfs(database, "size=2m"):
        with Store(env["FSML_DB_URL"], env["FSML_BLOB_URL"]) as store:
            with open(database / "filler", "wb") as filler, pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            records = [LabelledItem(NewItem(f"item {index}".encode(), "text/plain"), "cat", "train")
                       for index in range(50)]
            with pytest.raises(DatabaseError, match="no disk space left") as caught:
                store.import_version(records, LabelSchema("single_label", ("cat",)), "full", source="test")
            assert "\n" not in str(caught.value) and not isinstance(caught.value, DatabaseDamagedError)
            assert files_under(tmp_path / "blobs") == []  # the failed import's blobs are gone again
            (database / "filler").unlink()
            assert store.versions() == [] and store.item_count() == 0
            store.import_version(records, LabelSchema("single_label", ("cat",)), "full", source="test")


def test_command_functions_follow_one_naming_pattern():
    "Every command's function is `<group>_<command>_command` (its innermost group; `<command>_command` at the top level)."
    import typer

    from fsml_nb.cli import app

    wrong = []

    def walk(command, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            if hasattr(sub, "commands"):
                walk(sub, (*path, name))
            else:
                expected = "_".join((*path[-1:], name)).replace("-", "_") + "_command"
                if sub.callback.__name__ != expected:
                    wrong.append((" ".join((*path, name)), sub.callback.__name__, expected))

    walk(typer.main.get_command(app), ())
    assert wrong == [], f"(command, function, expected name): {wrong}"


def test_eval_run_says_what_is_wrong_with_the_model_it_was_given(cli_env: dict[str, str], tmp_path: Path):
    "A mistyped file path is not looked up as a registry name; a corrupt .onnx file is one line, not a traceback."
    assert fsml("import", "digits", env=cli_env).returncode == 0
    for typo in ("modle.onnx", str(tmp_path / "exports" / "model.onnx")):
        result = fsml("eval", "run", typo, "digits", "--json", env=cli_env)
        assert result.returncode == 1 and result.stderr.startswith(f"fsml: error: no model at {typo}"), result.stderr
    (tmp_path / "cut.onnx").write_bytes(b"\x08\x07\x12\x04")  # the first bytes of an ONNX file, then nothing
    result = fsml("eval", "run", str(tmp_path / "cut.onnx"), "digits", "--json", env=cli_env)
    assert result.returncode == 1 and json.loads(result.stdout)["kind"] == "EvaluationError", result.stdout  # --json
    assert result.stderr.startswith("fsml: error:") and "not a readable ONNX model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_guide_that_is_not_utf8_is_one_line(cli_env: dict[str, str], tmp_path: Path):
    (tmp_path / "guide.md").write_bytes("# Guide\n\nUn chat noir: caf\xe9.\n".encode("latin-1"))
    result = fsml("annotate", "guide", "cats", str(tmp_path / "guide.md"), env=cli_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"fsml: error: {tmp_path / 'guide.md'} is not UTF-8 text (byte 26 is 0xe9)")
