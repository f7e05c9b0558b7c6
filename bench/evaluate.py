"""Benchmark: an evaluation run of 10,000 items against the plain inference loop on the same items.

    python bench/evaluate.py [--items 10000] [--repeats 3]

The plain loop is what a user would write by hand: read each item's bytes from a folder, decode
them, run the ONNX model in batches of 256 and compute accuracy. `evaluate_model` does more: it
reads through the store (every blob re-hashed), computes every metric, and stores each item's
prediction and scores. The table gives both times (best of N, measured alternately in the same
run) and the ratio; the target is <= 1.2x.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fsml_nb.data import encode_png, import_digits
from fsml_nb.evaluate import evaluate_model, load_classifier
from fsml_nb.export import export_onnx
from fsml_nb.store import LabelledItem, NewItem, Store


def many_digits(store: Store, count: int):
    "A version of `count` distinct 8x8 digit images: digits with small random pixel changes."
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    labelled = []
    for index in range(count):
        base = digits.images[index % len(digits.images)] * (255 / 16)
        noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        labelled.append(LabelledItem(NewItem(encode_png(noisy), "image/png"), str(digits.target[index % len(digits.target)]),
                                     "test"))
    schema = import_digits(store).label_schema
    return store.import_version(labelled, schema, f"digits-{count}", source="bench")


def exported_model(folder: Path, classes: list[str]) -> Path:
    network = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10)).eval()
    path = folder / "model.onnx"
    export_onnx(network, torch.zeros(1, 1, 8, 8), path, metadata={"fsml.classes": classes, "fsml.preprocessing": {"input_shape": [1, 8, 8]}})
    return path


def plain_loop(files: list[tuple[Path, int]], model_path: Path) -> float:
    "Seconds for the hand-written loop: read, decode, batch, run, accuracy."
    start = time.perf_counter()
    classifier = load_classifier(model_path)
    inputs = np.stack([np.asarray(Image.open(io.BytesIO(path.read_bytes())), dtype=np.float32)[None] / 255
                       for path, _ in files])
    predicted = classifier.probabilities(inputs).argmax(axis=1)
    accuracy = float((predicted == np.array([target for _, target in files])).mean())
    assert 0 <= accuracy <= 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/fsml.db", f"{tmp}/blobs") as store:
        folder = Path(tmp)
        version = many_digits(store, args.items)
        model = exported_model(folder, list(version.label_schema.classes))
        files = []
        for entry in version.entries:
            path = folder / "plain" / f"{entry.item_sha256}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(store.blobs.get(entry.item_sha256))
            files.append((path, version.label_schema.classes.index(entry.label)))
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(files, model))
            start = time.perf_counter()
            evaluate_model(model, version, "test", store=store)
            ours.append(time.perf_counter() - start)
    print(f"| what ({args.items:,} items, best of {args.repeats}) | seconds | items/s |")
    print("| --- | ---: | ---: |")
    print(f"| plain loop: read, decode, ONNX batches of 256 | {min(plain):.2f} | {args.items / min(plain):,.0f} |")
    print(f"| evaluate_model: + hash check, all metrics, stored predictions | {min(ours):.2f} | {args.items / min(ours):,.0f} |")
    print(f"| ratio (target <= 1.2x) | {min(ours) / min(plain):.2f}x | |")


if __name__ == "__main__":
    main()
