"""Benchmark: the dataset-version loader against a plain folder of images, and version create/diff at 100k items.

    python bench/loader.py [--epochs 5] [--items 100000] [--pg-url postgresql://postgres@127.0.0.1:5432/test]

Prints two tables:
1. items/s through `fsml_nb.data.load` (blob read + sha256 check + decode) vs the same images
   read straight from a folder with PIL in a plain torch Dataset, same DataLoader settings,
   measured in the same run, alternating, best of N epochs; the ratio is loader / folder.
2. seconds to create a 100,000-item version, create a second one with 1% added, removed and
   relabelled, load a version, and diff the two, on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from fsml_nb.data import dataloader, image_to_tensor, import_digits, import_folder, load
from fsml_nb.db import items
from fsml_nb.store import Entry, LabelSchema, Store
from fsml_nb.testing import scratch_postgres_database


class FolderDataset(Dataset):
    "The baseline: image files decoded with PIL, as a hand-written torch Dataset would."

    def __init__(self, files: list[tuple[Path, int]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, target = self.files[index]
        with Image.open(path) as image:
            return image_to_tensor(image), target


def export_to_folder(store: Store, version, folder: Path) -> list[tuple[Path, int]]:
    "Write a version's images as plain files (the baseline reads exactly the same bytes)."
    files = []
    for entry in version.entries_in("train"):
        path = folder / entry.label / f"{entry.item_sha256}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.blobs.get(entry.item_sha256))
        files.append((path, version.label_schema.classes.index(entry.label)))
    return sorted(files, key=lambda file: file[0].name)  # the loader's order: by hash


def items_per_second(dataset: Dataset, workers: int, batch_size: int) -> float:
    loader = dataloader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(targets) for _, targets in loader)
    return count / (time.perf_counter() - start)


def compare_loaders(store: Store, version, tmp: Path, label: str, epochs: int) -> list[tuple]:
    folder_files = export_to_folder(store, version, tmp / f"folder-{label}")
    version_dataset = load(version, "train", store=store)
    folder_dataset = FolderDataset(folder_files)
    rows = []
    for workers in (0, 2):
        best = {"loader": 0.0, "folder": 0.0}
        for _ in range(epochs):  # alternate, so machine noise hits both alike
            best["folder"] = max(best["folder"], items_per_second(folder_dataset, workers, 64))
            best["loader"] = max(best["loader"], items_per_second(version_dataset, workers, 64))
        rows.append((label, len(version_dataset), workers, best["folder"], best["loader"],
                     best["loader"] / best["folder"]))
    return rows


def synthetic_images(folder: Path, count: int, size: int) -> Path:
    generator = np.random.default_rng(0)
    for index in range(count):
        class_folder = folder / f"class{index % 10}"
        class_folder.mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(class_folder / f"{index}.png")
    return folder


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def version_timings(store: Store, count: int) -> dict[str, float]:
    "Create, load and diff versions of `count` synthetic items (rows only: versions never read blobs)."
    generator = np.random.default_rng(0)
    shas = sorted({f"{value:064x}" for value in generator.integers(0, 2**62, count + count // 50, dtype=np.int64)})
    now = datetime.now(timezone.utc)
    with store.engine.begin() as connection:
        for start in range(0, len(shas), 20000):
            connection.execute(items.insert(), [{"sha256": sha, "media_type": "image/png", "size": 1,
                                                 "collected_at": now, "meta": {}} for sha in shas[start:start + 20000]])
    schema = LabelSchema("single_label", tuple(str(digit) for digit in range(10)))
    base, extra = shas[:count], shas[count:]
    first_entries = [Entry(sha, str(index % 10), "test" if index % 5 == 0 else "train") for index, sha in enumerate(base)]
    results: dict[str, float] = {}
    with timed(results, "create 100%"):
        first = store.create_version(first_entries, schema, "bench")
    changed = first_entries[count // 100:]  # 1% removed
    changed = [Entry(e.item_sha256, str((int(e.label) + 1) % 10), e.split) if i < count // 100 else e
               for i, e in enumerate(changed)]  # 1% relabelled
    changed += [Entry(sha, "0", "train") for sha in extra[: count // 100]]  # 1% added
    with timed(results, "create changed"):
        second = store.create_version(changed, schema, "bench")
    with timed(results, "load"):
        store.version(first.id)
    with timed(results, "diff"):
        summary = store.diff(first.id, second.id).summary()
    expected = {"added": count // 100, "removed": count // 100, "relabelled": count // 100, "moved": 0}
    assert summary == expected, summary
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=3000, help="synthetic 64x64 RGB images for the loader test")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = Store(f"sqlite:///{tmp}/fsml.db", str(tmp / "blobs"))
        rows = compare_loaders(store, import_digits(store), tmp, "digits 8x8 gray", args.epochs)
        shapes = import_folder(synthetic_images(tmp / "synthetic", args.images, 64), store=store, test_fraction=0.0)
        rows += compare_loaders(store, shapes, tmp, "synthetic 64x64 RGB", args.epochs)
        print(f"\n## Loader vs folder baseline (items/s, best of {args.epochs} epochs, batch 64)\n")
        print("| data | items | workers | folder + PIL | fsml load() | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, count, workers, folder, loader, ratio in rows:
            print(f"| {label} | {count} | {workers} | {folder:,.0f} | {loader:,.0f} | {ratio:.2f}x |")

        timings = {"sqlite": version_timings(Store(f"sqlite:///{tmp}/bench.db", str(tmp / "blobs")), args.items)}
        try:
            with scratch_postgres_database(args.pg_url) as pg_url:
                pg_store = Store(pg_url, str(tmp / "blobs"))
                timings["postgresql"] = version_timings(pg_store, args.items)
                pg_store.close()
        except Exception as error:  # a benchmark reports what it could not measure
            print(f"\n(PostgreSQL not measured: {str(error).splitlines()[0]})")
        print(f"\n## Dataset versions of {args.items:,} items (seconds)\n")
        print("| database | create | create (1% added/removed/relabelled) | load | diff |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for backend, result in timings.items():
            print(f"| {backend} | {result['create 100%']:.2f} | {result['create changed']:.2f} | "
                  f"{result['load']:.2f} | {result['diff']:.2f} |")


if __name__ == "__main__":
    main()
