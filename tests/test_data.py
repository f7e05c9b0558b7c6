"""Importers and loaders on SQLite and PostgreSQL, with every bad input the folder importer meets."""
from __future__ import annotations

import gc
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import create_engine, text

from fsml_nb.data import (DuplicateItemError, FolderImportError, dataloader, import_digits, import_folder,
                          import_mnist1d, load)
from fsml_nb.db import normalize_db_url
from fsml_nb.repro import registered_spec  # registers the MNIST-1D architectures
from fsml_nb.store import BlobCorruptError, BlobMissingError, DatasetVersion, Store, UnknownVersionError
from fsml_nb.train import TrainConfig, fit


def make_folder(root: Path, classes=("a", "b"), per_class: int = 6, size: int = 12, mode: str = "RGB") -> Path:
    generator = np.random.default_rng(0)
    for class_name in classes:
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(generator.integers(0, 255, shape, dtype=np.uint8)).save(root / class_name / f"{index}.png")
    return root


def store_state(store: Store) -> tuple:
    blobs = sorted(path.name for path in Path(store.blobs.root).rglob("*") if path.is_file())
    return store.item_count(), [summary.id for summary in store.versions()], blobs


def test_digits_import_and_a_batch_back(store: Store):
    version = import_digits(store)
    assert version.split_counts() == {"test": 360, "train": 1437}
    assert version.label_counts()["test"]["0"] == 36  # stratified
    assert import_digits(store).id == version.id
    images, targets = next(iter(dataloader(load(version.id[:10], "train", store=store), batch_size=64)))
    assert images.shape == (64, 1, 8, 8) and targets.dtype == torch.int64
    item = store.get_item(version.entries[0].item_sha256)
    assert item.media_type == "image/png" and item.licence == "CC-BY-4.0"


def test_digits_version_id_is_the_same_on_every_machine(store: Store):
    # uncompressed PNGs: the bytes, and so the id, do not depend on the zlib build
    assert import_digits(store).id == "1ab179200b653eeb9fe85d50d5cea55c97ea4178065d5e5e6648d6a48f2dbf53"


def test_mnist1d_import(store: Store):
    version = import_mnist1d(store)
    assert version.split_counts() == {"test": 1000, "train": 4000}
    signals, targets = next(iter(dataloader(load(version, "test", store=store), batch_size=100)))
    assert signals.shape == (100, 40) and signals.dtype == torch.float32
    assert set(targets.tolist()) <= set(range(10))


def test_folder_import_with_workers(store: Store, tmp_path: Path):
    version = import_folder(make_folder(tmp_path / "pics"), store=store, name="pics")
    assert len(version.entries) == 12 and version.label_schema.classes == ("a", "b")
    dataset = load(version, None, store=store)
    batches = list(dataloader(dataset, batch_size=4, num_workers=2))
    assert sum(len(targets) for _, targets in batches) == 12 and batches[0][0].shape == (4, 3, 12, 12)


def test_folder_with_split_folders_keeps_its_splits(store: Store, tmp_path: Path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=4)
    make_folder(root / "test", per_class=2, size=10)
    version = import_folder(root, store=store, split_folders=True)
    assert version.split_counts() == {"test": 4, "train": 8}


def test_hash_splits_are_stable_when_the_folder_grows(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "grow", per_class=20)
    first = import_folder(root, store=store, test_fraction=0.3)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "a" / "extra.png")
    grown = import_folder(root, store=store, test_fraction=0.3)
    changes = store.diff(first, grown)
    assert changes.summary()["added"] == 1 and changes.summary()["removed"] == 0
    assert len(changes.moved) <= 1  # at most the one image at the class's test/train boundary


@pytest.mark.parametrize("damage, message", [
    ("text", "not an image"),
    ("truncated", "corrupt image"),
    ("duplicate", "duplicate another file"),
    ("loose", "outside any class folder"),
    ("empty", "no images found"),
    ("missing", "is not a folder"),
])
def test_bad_folders_are_refused_and_the_store_is_unchanged(store: Store, tmp_path: Path, damage: str, message: str):
    import_digits(store)
    before = store_state(store)
    root = make_folder(tmp_path / "bad")
    if damage == "text":
        (root / "a" / "notes.png").write_text("I am not a picture")
    elif damage == "truncated":
        data = (root / "a" / "0.png").read_bytes()
        (root / "b" / "cut.png").write_bytes(data[: len(data) // 2])
    elif damage == "duplicate":
        (root / "b" / "copy.png").write_bytes((root / "a" / "1.png").read_bytes())
    elif damage == "loose":
        (root / "stray.png").write_bytes((root / "a" / "1.png").read_bytes())
    elif damage == "empty":
        root = tmp_path / "nothing"
        (root / "a").mkdir(parents=True)
    else:
        root = tmp_path / "absent"
    with pytest.raises(FolderImportError, match=message) as caught:
        import_folder(root, store=store)
    if damage == "duplicate":
        assert isinstance(caught.value, DuplicateItemError) and "copy.png" in str(caught.value)
    assert store_state(store) == before


def test_the_loader_fails_loudly_on_damaged_blobs(store: Store):
    version = import_digits(store)
    dataset = load(version, "test", store=store)
    path = Path(store.blobs.path(dataset.shas[3]))
    original = path.read_bytes()
    path.write_bytes(original.replace(original[-20:-12], b"\x00" * 8))
    with pytest.raises(BlobCorruptError, match=dataset.shas[3]):
        dataset[3]
    with pytest.raises(BlobCorruptError):
        list(dataloader(dataset, batch_size=50))
    path.unlink()
    with pytest.raises(BlobMissingError, match="1 of 360 blobs"):
        load(version, "test", store=store)
    report = store.verify_version(version)
    assert report.missing == (dataset.shas[3],) and not report.ok
    path.write_bytes(original)
    assert store.verify_version(version).ok


def test_loading_an_unknown_version(store: Store):
    with pytest.raises(UnknownVersionError, match="fsml versions"):
        load("0123456789ab", store=store)


# --- folder import: layouts, links, names, sizes, splits and the summary (issues 9 §3.6, 17 items 2-3) ---

def tiny_png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def png_header_only(width: int, height: int) -> bytes:
    "A PNG whose header claims `width` x `height` pixels (what a decompression bomb looks like to Pillow)."
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def split_layout(root: Path, splits=("train", "test", "holdout")) -> Path:
    for offset, split in enumerate(splits):
        for class_name in ("a", "b"):
            for index in range(3):
                tiny_png(root / split / class_name / f"{index}.png", 10 * offset + 3 * index + (class_name == "b") * 100)
    return root


def test_split_named_folders_need_an_explicit_choice(store: Store, tmp_path: Path):
    root = split_layout(tmp_path / "splits")
    before = store_state(store)
    with pytest.raises(FolderImportError, match=r"named like splits \(holdout, test, train\).*split_folders=True"):
        import_folder(root, store=store)
    assert store_state(store) == before
    as_splits = import_folder(root, store=store, split_folders=True)
    assert as_splits.label_schema.classes == ("a", "b")
    assert as_splits.split_counts() == {"holdout": 6, "test": 6, "train": 6}
    as_classes = import_folder(root, store=store, split_folders=False, name="as-classes")
    assert as_classes.label_schema.classes == ("holdout", "test", "train")
    assert any("holdout/a/" in note and "flattened" in note for note in as_classes.notes)


def test_split_folders_true_needs_split_folders(store: Store, tmp_path: Path):
    with pytest.raises(FolderImportError, match="has files outside any class folder"):
        import_folder(make_folder(tmp_path / "plain"), store=store, split_folders=True)


def test_links_pointing_outside_are_refused_unless_allowed(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "linked")
    outside = tiny_png(tmp_path / "elsewhere" / "secret.png", 77)
    tiny_png(tmp_path / "elsewhere" / "more" / "x.png", 78)
    (root / "a" / "secret.png").symlink_to(outside)
    (root / "b" / "more").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    before = store_state(store)
    with pytest.raises(FolderImportError, match=r"2 link\(s\) point outside .*a/secret.png -> .*follow_outside_links"):
        import_folder(root, store=store)
    assert store_state(store) == before
    allowed = import_folder(root, store=store, follow_outside_links=True)
    assert len(allowed.entries) == 14
    assert any("a/secret.png" in note and "outside" in note for note in allowed.notes)


def test_a_link_loop_is_skipped_with_a_reason(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "loop")
    (root / "a" / "again").symlink_to(root / "a", target_is_directory=True)
    result = import_folder(root, store=store)
    assert len(result.entries) == 12
    assert [(skipped.path, "loop" in skipped.reason) for skipped in result.skipped] == [("a/again/", True)]


def test_broken_links_and_pipes_are_skipped_with_a_reason(store: Store, tmp_path: Path):
    import os
    root = make_folder(tmp_path / "odd")
    (root / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(root / "b" / "pipe.png")  # reading it would wait forever
    result = import_folder(root, store=store)
    assert len(result.entries) == 12
    assert [(skipped.path, skipped.reason.split(" (")[0]) for skipped in result.skipped] == [
        ("a/gone.png", "a broken link"), ("b/pipe.png", "not a regular file")]


def test_a_small_class_without_a_test_item_is_said(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "small")
    tiny_png(root / "rare" / "0.png", 1)
    tiny_png(root / "rare" / "1.png", 2)
    result = import_folder(root, store=store, test_fraction=0.2)
    assert result.label_counts()["train"]["rare"] == 2
    assert "too few items for a test item in class(es): rare" in result.notes


def test_split_folder_names_are_checked_too(store: Store, tmp_path: Path):
    root = split_layout(tmp_path / "splits", ("train", "fold\n1"))
    with pytest.raises(FolderImportError, match=re.escape("split folder name 'fold\\n1'") + ".*control character"):
        import_folder(root, store=store, split_folders=True)


def test_hidden_names_are_skipped_and_reported(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "hidden")
    (root / ".DS_Store").write_bytes(b"\0\1")
    tiny_png(root / ".cache" / "x.png", 1)
    tiny_png(root / "a" / ".thumb.png", 2)
    result = import_folder(root, store=store)
    assert len(result.entries) == 12
    assert {(skipped.path, skipped.reason) for skipped in result.skipped} == {
        (".DS_Store", "hidden (name starts with a dot)"), (".cache/", "hidden (name starts with a dot)"),
        ("a/.thumb.png", "hidden (name starts with a dot)")}
    assert "a/.thumb.png" in result._repr_markdown_()


@pytest.mark.parametrize("bad_name", ["two\nlines", "tab\there", "bell\x07", "bidi\u202eevil"])
def test_class_names_with_control_characters_are_refused(store: Store, tmp_path: Path, bad_name: str):
    root = make_folder(tmp_path / "names")
    tiny_png(root / bad_name / "0.png", 5)
    before = store_state(store)
    with pytest.raises(FolderImportError, match=re.escape(f"class folder name {bad_name!r}") + ".*control character"):
        import_folder(root, store=store)
    assert store_state(store) == before


def test_a_version_name_with_a_newline_is_refused(store: Store, tmp_path: Path):
    with pytest.raises(FolderImportError, match=re.escape("version name 'x\\ny'") + ".*control character"):
        import_folder(make_folder(tmp_path / "named"), store=store, name="x\ny")


def test_a_decompression_bomb_is_one_clear_error(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "bomb")
    (root / "a" / "huge.png").write_bytes(png_header_only(20_000, 10_000))  # 200 megapixels
    before = store_state(store)
    with pytest.raises(FolderImportError, match=r"a/huge.png: more than 178.957 megapixels, which Pillow refuses to "
                                                r"open .*, over the limit of 50 megapixels \(max_pixels\)"):
        import_folder(root, store=store)
    assert store_state(store) == before


def test_the_pixel_limit_is_configurable(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "limit", size=12)
    with pytest.raises(FolderImportError, match=r"12x12 pixels .* over the limit of 0.0001 megapixels"):
        import_folder(root, store=store, max_pixels=100)
    assert len(import_folder(root, store=store, max_pixels=144).entries) == 12


def test_decoded_items_have_a_size_cap(store: Store, tmp_path: Path):
    from fsml_nb.data import ItemTooLargeError, decode_item, npy_bytes
    png = (make_folder(tmp_path / "cap", per_class=1, size=12) / "a" / "0.png").read_bytes()
    assert decode_item(png, "image/png").shape == (3, 12, 12)
    with pytest.raises(ItemTooLargeError, match=r"decodes to 3x12x12 float32 \(1,728 bytes\), over the cap of 1,000"):
        decode_item(png, "image/png", max_decoded_bytes=1000)
    with pytest.raises(ItemTooLargeError, match=r"decodes to 100x100 float32 \(40,000 bytes\)"):
        decode_item(npy_bytes(np.zeros((100, 100), dtype=np.uint8)), "application/x-npy", max_decoded_bytes=1000)
    with pytest.raises(ItemTooLargeError, match="megapixels"):
        decode_item(png_header_only(20_000, 10_000), "image/png")
    version = import_folder(tmp_path / "cap", store=store)
    dataset = load(version, store=store, max_decoded_bytes=1000)
    with pytest.raises(ItemTooLargeError, match=dataset.shas[0]):
        dataset[0]


def three_classes(root: Path, per_class: int = 60) -> Path:
    for class_index, class_name in enumerate(("cat", "dog", "fox")):
        for index in range(per_class):
            tiny_png(root / class_name / f"{index}.png", index, size=4 + class_index)
    return root


def test_hash_splits_are_stratified_by_class(store: Store, tmp_path: Path):
    version = import_folder(three_classes(tmp_path / "pets"), store=store, test_fraction=0.2, val_fraction=0.1)
    assert version.label_counts() == {"test": {"cat": 12, "dog": 12, "fox": 12}, "train": {"cat": 42, "dog": 42, "fox": 42},
                                      "val": {"cat": 6, "dog": 6, "fox": 6}}


def test_hash_splits_depend_on_content_only(store: Store, tmp_path: Path):
    import random
    import shutil
    first = import_folder(three_classes(tmp_path / "one"), store=store)
    shuffled = tmp_path / "two"
    files = sorted((tmp_path / "one").rglob("*.png"))
    random.Random(1).shuffle(files)
    for number, path in enumerate(files):  # new file names, a new order
        (shuffled / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, shuffled / path.parent.name / f"renamed-{number}.png")
    assert import_folder(shuffled, store=store).id == first.id


def test_an_empty_class_folder_is_refused_unless_allowed(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "gap")
    (root / "c").mkdir()
    (root / "d").mkdir()
    (root / "d" / ".keep").write_text("")
    before = store_state(store)
    with pytest.raises(FolderImportError, match=r"2 class folder\(s\) have no images: c, d.*allow_empty_classes"):
        import_folder(root, store=store)
    assert store_state(store) == before
    version = import_folder(root, store=store, allow_empty_classes=True)
    assert version.label_schema.classes == ("a", "b", "c", "d") and len(version.entries) == 12
    assert any("c, d" in note and "no items" in note for note in version.notes)


def test_nested_folders_are_flattened_and_said_so(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "nested")
    tiny_png(root / "a" / "kittens" / "x.png", 3)
    tiny_png(root / "a" / "kittens" / "deeper" / "y.png", 4)
    version = import_folder(root, store=store)
    assert version.label_counts()["train"]["a"] + version.label_counts().get("test", {}).get("a", 0) == 8
    assert "a/kittens/ (2 files) flattened into class a" in version.notes


def test_the_same_content_under_a_new_name(store: Store, tmp_path: Path):
    import shutil
    old = import_folder(make_folder(tmp_path / "old"), store=store, name="old")
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    again = import_folder(tmp_path / "new", store=store)
    assert again.id == old.id and again.already_existed and not old.already_existed
    assert any("already stored as version" in note and "'old'" in note and "'new' is now one more name" in note
               for note in again.notes)
    assert store.version("new").id == old.id and store.version("old").id == old.id
    assert store.version_names(old) == ["old", "new"]


def test_the_summary_renders_per_class_and_split(store: Store, tmp_path: Path):
    root = three_classes(tmp_path / "pets", per_class=10)
    (root / ".DS_Store").write_bytes(b"junk")
    result = import_folder(root, store=store, test_fraction=0.2)
    markdown = result._repr_markdown_()
    assert "| class | test | train | total |" in markdown
    assert "| cat | 2 | 8 | 10 |" in markdown and "| **total** | 6 | 24 | 30 |" in markdown
    assert "`.DS_Store`: hidden (name starts with a dot)" in markdown
    assert result.version == store.version(result.id) == result  # the plain version, as stored
    assert type(result.version) is DatasetVersion and store.version(result) is result


def test_the_cli_prints_the_summary_and_takes_the_flags(tmp_path: Path, monkeypatch, capsys):
    from fsml_nb.cli import main
    monkeypatch.setenv("FSML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FSML_DB_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("FSML_BLOB_URL", str(tmp_path / "blobs"))
    root = split_layout(tmp_path / "splits", ("train", "test"))
    with pytest.raises(SystemExit) as exited:
        main(["import", "folder", str(root)])
    captured = capsys.readouterr()
    assert exited.value.code == 1 and "named like splits" in captured.err and len(captured.err.splitlines()) == 1
    with pytest.raises(SystemExit) as exited:
        main(["import", "folder", str(root), "--split-folders", "--max-pixels", "1000000"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "| a | 3 | 3 | 6 |" in out and "split folders" in out
    with pytest.raises(SystemExit) as exited:
        main(["import", "folder", str(root), "--class-folders", "--name", "flat"])
    assert exited.value.code == 0 and "train/a/ (3 files) flattened into class train" in capsys.readouterr().out


def open_connections(db_url: str, folder: Path) -> int:
    "Connections this process holds to the test database: SQLite files open under `folder`, or PostgreSQL sessions."
    if db_url.startswith("sqlite"):
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return sum(link.startswith(str(folder)) and ".db" in link for link in links)
    engine = create_engine(normalize_db_url(db_url))
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid()")).scalar_one()
    finally:
        engine.dispose()


def test_calls_without_a_store_close_the_store_they_open(db_url: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FSML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FSML_DB_URL", db_url)
    monkeypatch.setenv("FSML_BLOB_URL", str(tmp_path / "blobs"))
    gc.collect()
    gc.disable()  # an engine nobody closed stays open until a collection; none runs here
    try:
        version = import_digits()
        assert open_connections(db_url, tmp_path) == 0, "import_digits left its store open"
        images, _ = next(iter(dataloader(load(version.id, "train"), batch_size=4)))
        assert images.shape == (4, 1, 8, 8)
        assert open_connections(db_url, tmp_path) == 0, "load left its store open"
        folder = import_folder(make_folder(tmp_path / "pets"))
        assert folder.split_counts() and open_connections(db_url, tmp_path) == 0, "import_folder left its store open"
        fit(registered_spec("mnist1d-linear"), import_mnist1d(), checkpoint_path=False, progress=False,
            config=TrainConfig(max_steps=2, batch_size=50, val_fraction=0.0, eval_every_steps=2))
        assert open_connections(db_url, tmp_path) == 0, "import_mnist1d or fit left its store open"
        with Store() as mine:  # the check sees a store that is open
            mine.item_count()
            assert open_connections(db_url, tmp_path) > 0
    finally:
        gc.enable()


def test_names_that_are_not_utf8_are_refused_or_kept_readable(store: Store, tmp_path: Path):
    "A class folder whose name is bytes, not text, is one clear error; an odd file name is imported, its path escaped."
    before = store_state(store)
    root = make_folder(tmp_path / "latin1")
    os.rename(root / "b", os.fsdecode(bytes(root) + b"/caf\xe9"))  # a folder named on a Latin-1 system
    with pytest.raises(FolderImportError, match=r"class folder name 'caf\\udce9' is not UTF-8 text"):
        import_folder(root, store=store)
    assert store_state(store) == before

    root = make_folder(tmp_path / "odd-files")
    os.rename(root / "a" / "0.png", os.fsdecode(bytes(root) + b"/a/photo-\xff.png"))
    version = import_folder(root, store=store)
    paths = {store.get_item(entry.item_sha256).meta["path"] for entry in version.entries}
    assert "a/photo-\\xff.png" in paths and len(paths) == 12
