"""A notebook-first research-to-production ML framework for small teams: store, annotate, train, export, serve.

Modules:

- `fsml_nb.annotate`: Annotation projects for many annotators at once: blind overlap, task leasing that is safe under concurrency, a versioned guide, agreement and consensus, export to a dataset version, and an ipywidgets panel with hotkeys that runs in JupyterLab and in Voila.
- `fsml_nb.card`: The customer's requirements and constraints as a small file the loop reads and checks: the problem in plain words, its ML formulation, the metric and its minimum, latency and memory budgets, throughput, licences and the schedule.
- `fsml_nb.cli`: The `fsml` command: set up a store, import data, list, show, diff and verify dataset versions. For CI, ops, and anyone who prefers a shell.
- `fsml_nb.collect`: A polite web crawler that fills the store with raw items and keeps where each came from: robots.txt, per-host rate limits, byte and page caps, retries with backoff, licences, and a frontier in the database that survives restarts and is shared by many workers.
- `fsml_nb.compress`: Make a trained model smaller: knowledge distillation, structured pruning to a target parameter ratio with fine-tuning, BatchNorm folding and head replacement, and a report of parameters, MACs, latency and accuracy before and after.
- `fsml_nb.core`: Settings from the environment, the errors every module raises, logging, and the one place where we make `torchvision` (and so `timm`) import on CPU-only torch.
- `fsml_nb.data`: Loaders from a dataset version to a torch `Dataset` and `DataLoader`, small transforms, and importers that turn public benchmarks (scikit-learn digits, MNIST-1D) and a folder of a user's own images into dataset versions.
- `fsml_nb.db`: The one SQL schema (a section per stage), engines that behave the same on SQLite and PostgreSQL, migrations, transactions that retry, insert-ignore, and the lease helper that every queue in fsml_nb uses.
- `fsml_nb.evaluate`: Evaluation runs stored item by item, the metrics a team reads (accuracy, per-class precision / recall / F1, confusion, top-k, calibration), the wrong cases behind each number, two model versions compared with a significance test, suspected label errors, and the loop that sends them back to annotators.
- `fsml_nb.export`: ONNX export of a checkpoint, INT8 quantization (dynamic, and static QDQ calibrated on a dataset version), parity and latency reports of every variant against the research model, and a measured recommendation of what to ship.
- `fsml_nb.pipeline`: Parameterized notebooks as pipeline steps, run by papermill: a DAG declared in one small file, strict parameters, caching by content, resume after a failure, and every executed notebook kept as a report.
- `fsml_nb.registry`: Immutable model archives on the blob store, versions numbered per name, aliases moved through an append-only promotion log, events that workers poll, and lineage both ways.
- `fsml_nb.repro`: Paper reproduction recipes: a paper's reported table, the dataset, the models and their training settings, and a tolerance. `reproduce` trains every row over several seeds and puts ours beside theirs.
- `fsml_nb.serve`: HTTP -> message queue -> Python workers: the API, three brokers behind one interface, workers with dynamic batching and hot reload, every prediction stored, deploy.
- `fsml_nb.store`: The content-addressed blob store, items, labels and immutable dataset versions that can be listed, shown, verified and diffed, with the imports that fill them safely.
- `fsml_nb.testing`: Helpers for tests and benchmarks: scratch PostgreSQL databases that are created empty and dropped afterwards, so no test ever writes into a shared database.
- `fsml_nb.train`: A fit loop for timm models (built from scratch) and plain torch modules: AdamW and a schedule, fixed seeds, early stopping, metrics per epoch, a progress bar, and resumable checkpoints as safetensors that name their dataset version, config and code version."""

from .core import install_missing_extra_hook as _install_missing_extra_hook

_install_missing_extra_hook()  # importing a module whose extra is missing names the extra to install

__version__ = "0.0.1"
