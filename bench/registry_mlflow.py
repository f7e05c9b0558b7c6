"""MLflow's model registry on the same files, for `bench/registry.py` (run with MLflow's own Python).

    MLFLOW_VENV/bin/python bench/registry_mlflow.py FILES_DIR WORK_DIR [--repeats 3]

Runs in a separate virtual environment that has MLflow (and not fsml_nb): SQLite backend store,
local artifact store. Times, per repeat on a fresh tracking database: register (log the folder's
files as run artifacts, then create a registered model version from them), set an alias, resolve
it (median of 50), and download the version's files. Prints one JSON object of median seconds.

The environment (MLflow 3.17.2 when last run; it brings no torch):

    python3.11 -m venv /tmp/mlflow-venv
    /tmp/mlflow-venv/bin/pip install mlflow --constraint constraints.txt
    python bench/registry.py --mlflow-python /tmp/mlflow-venv/bin/python
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def one_repeat(files: Path, work: Path) -> dict[str, float]:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    client = MlflowClient()
    experiment = client.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())  # not timed
    client.create_registered_model("bench")
    timings = {}
    started = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(files), artifact_path="model")
    version = client.create_model_version("bench", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    timings["register"] = time.perf_counter() - started
    started = time.perf_counter()
    client.set_registered_model_alias("bench", "champion", version.version)
    timings["set alias"] = time.perf_counter() - started
    resolves = []
    for _ in range(50):
        started = time.perf_counter()
        client.get_model_version_by_alias("bench", "champion")
        resolves.append(time.perf_counter() - started)
    timings["resolve alias"] = statistics.median(resolves)
    started = time.perf_counter()
    uri = client.get_model_version_download_uri("bench", version.version)
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(work / "download"))
    timings["download"] = time.perf_counter() - started
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        work = args.work / f"mlflow{repeat}"
        work.mkdir(parents=True)
        runs.append(one_repeat(args.files, work))
    import mlflow
    print(json.dumps({"mlflow": mlflow.__version__,
                      **{key: statistics.median(run[key] for run in runs) for key in runs[0]}}))


if __name__ == "__main__":
    main()
