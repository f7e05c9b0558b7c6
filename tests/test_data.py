"""Importers and loaders on SQLite and PostgreSQL, with every bad input the folder importer meets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsml_nb.data import (DuplicateItemError, FolderImportError, dataloader, import_digits, import_folder,
                          import_mnist1d, load)
from fsml_nb.store import BlobCorruptError, BlobMissingError, Store, UnknownVersionError


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
    version = import_folder(root, store=store)
    assert version.split_counts() == {"test": 4, "train": 8}


def test_hash_splits_are_stable_when_the_folder_grows(store: Store, tmp_path: Path):
    root = make_folder(tmp_path / "grow", per_class=20)
    first = import_folder(root, store=store, test_fraction=0.3)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "a" / "extra.png")
    grown = import_folder(root, store=store, test_fraction=0.3)
    assert store.diff(first, grown).summary() == {"added": 1, "removed": 0, "relabelled": 0, "moved": 0}


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
