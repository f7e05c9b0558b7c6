"""A notebook-first research-to-production ML framework for small teams: store, annotate, train, export, serve.

Modules:

- `fsml_nb.cli`: The `fsml` command: set up a store, import data, list, show, diff and verify dataset versions. For CI, ops, and anyone who prefers a shell.
- `fsml_nb.core`: Settings from the environment, the errors every module raises, logging, and the one place where we make `torchvision` (and so `timm`) import on CPU-only torch.
- `fsml_nb.data`: Loaders from a dataset version to a torch `Dataset` and `DataLoader`, small transforms, and importers that turn public benchmarks (scikit-learn digits, MNIST-1D) and a folder of a user's own images into dataset versions.
- `fsml_nb.store`: The SQL schema and its migrations, the content-addressed blob store, items, labels and immutable dataset versions that can be listed, shown, verified and diffed.
- `fsml_nb.train`: A fit loop for timm models (built from scratch) and plain torch modules: AdamW and a schedule, fixed seeds, early stopping, metrics per epoch, a progress bar, and resumable checkpoints as safetensors that name their dataset version, config and code version."""

__version__ = "0.0.1"
