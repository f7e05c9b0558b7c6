"""Pipelines with papermill really executing notebooks: run locks, Ctrl-C and resume, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from fsml_nb.db import pipeline_runs, reading, transaction
from fsml_nb.core import process_alive
from fsml_nb.pipeline import PipelineError, load_pipeline, pipeline_history, run_pipeline
from fsml_nb.store import Store


def step_notebook(path: Path, parameters: str, body: str) -> None:
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters, "outputs": [],
              "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": body, "outputs": [], "execution_count": None}]
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))


def clean_environment() -> dict[str, str]:
    "This process's environment without FSML_* settings (an earlier test may have left some behind), keeper off."
    return {**{key: value for key, value in os.environ.items() if not key.startswith("FSML_")},
            "FSML_KERNEL_KEEPER": "off"}


@pytest.fixture
def slow_pipeline(tmp_path: Path) -> Path:
    step_notebook(tmp_path / "first.ipynb", "size: int = 3",
                  "from fsml_nb.pipeline import record_outputs\nrecord_outputs(numbers=list(range(size)))")
    step_notebook(tmp_path / "slow.ipynb", "numbers: list = []\nseconds: float = 0.0",
                  "import time\ntime.sleep(seconds)\nfrom fsml_nb.pipeline import record_outputs\n"
                  "record_outputs(total=sum(numbers))")
    (tmp_path / "slow.toml").write_text('name = "slow"\n[[steps]]\nname = "first"\nnotebook = "first.ipynb"\n'
                                        '[[steps]]\nname = "slow"\nnotebook = "slow.ipynb"\nafter = ["first"]\n')
    return tmp_path / "slow.toml"


def test_a_live_run_locks_the_pipeline_and_a_dead_one_does_not(slow_pipeline: Path, tmp_path: Path):
    with Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        run_pipeline(slow_pipeline, store=store, progress=False)
        run_id = pipeline_history(store, "slow")[0].id
        transaction(store.engine, lambda connection: connection.execute(
            pipeline_runs.update().where(pipeline_runs.c.id == run_id)
            .values(status="running", lease_owner="elsewhere:1", lease_expires=time.time() + 60)))
        with pytest.raises(PipelineError, match="already running"):
            run_pipeline(slow_pipeline, store=store, progress=False)
        transaction(store.engine, lambda connection: connection.execute(  # the holder was killed: its lease lapses
            pipeline_runs.update().where(pipeline_runs.c.id == run_id).values(lease_expires=time.time() - 1)))
        again = run_pipeline(slow_pipeline, store=store, progress=False)
        assert [step.status for step in again.steps] == ["cached", "cached"]
        with reading(store.engine) as connection:
            assert connection.execute(select(pipeline_runs.c.status).where(pipeline_runs.c.id == run_id)).scalar() \
                == "interrupted"


def test_ctrl_c_then_a_rerun_resumes_at_the_interrupted_step(slow_pipeline: Path, tmp_path: Path):
    env = {**clean_environment(), "FSML_HOME": str(tmp_path / "home")}
    script = f"from fsml_nb.pipeline import run_pipeline\nrun_pipeline({str(slow_pipeline)!r}, {{'seconds': 60.0}}, progress=False)"
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.DEVNULL, cwd=tmp_path)
    with Store(f"sqlite:///{tmp_path}/home/fsml.db", str(tmp_path / "home/blobs")) as store:
        def slow_step_running() -> bool:
            history = pipeline_history(store, "slow")
            if not history or history[0].steps.get("first") != "done":
                return False
            time.sleep(3)  # the first step is recorded: give the slow one time to start
            return True

        interrupt(process, slow_step_running, "the slow step", seconds=120)
        assert process.returncode != 0
        assert pipeline_history(store, "slow")[0].status == "interrupted"
        resumed = run_pipeline(slow_pipeline, {"seconds": 0.0}, store=store, progress=False)
        assert [step.status for step in resumed.steps] == ["cached", "done"]


def test_bad_pipelines_are_one_clear_error(tmp_path: Path, slow_pipeline: Path):
    (tmp_path / "noparams.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    (tmp_path / "noparams.toml").write_text('[[steps]]\nname = "a"\nnotebook = "noparams.ipynb"\n')
    with Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        with pytest.raises(PipelineError, match="no cell tagged 'parameters'"):
            run_pipeline(tmp_path / "noparams.toml", store=store)
        with pytest.raises(PipelineError, match="no step takes parameter"):
            run_pipeline(slow_pipeline, {"sise": 3}, store=store)
        with pytest.raises(PipelineError, match="has no step 'nope'"):
            run_pipeline(slow_pipeline, store=store, from_step="nope")
        assert pipeline_history(store) == []  # nothing recorded as run
    with pytest.raises(PipelineError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("[[steps]\n")
        load_pipeline(tmp_path / "broken.toml")


@pytest.fixture(params=["sqlite", "rabbitmq"])
def step_broker(request, tmp_path: Path):
    "A broker URL for the step queue and a queue name of this test's own (deleted afterwards on RabbitMQ)."
    import uuid

    queue = f"fsml.test.pipeline.{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/queue.db", queue
        return
    url = request.getfixturevalue("rabbitmq_url")
    yield url, queue
    from fsml_nb.serve import delete_rabbit_queue
    delete_rabbit_queue(url, queue)


def test_steps_run_on_two_queue_workers(slow_pipeline: Path, tmp_path: Path, step_broker):
    broker_url, queue = step_broker
    home = tmp_path / "home"
    env = {**clean_environment(), "FSML_HOME": str(home), "FSML_BROKER_URL": broker_url}
    fsml = [sys.executable, "-c", "import sys; from fsml_nb.cli import main; main(sys.argv[1:])"]
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        workers = [subprocess.Popen([*fsml, "pipeline", "worker", "--queue", queue], env=env, cwd=tmp_path)
                   for _ in range(2)]
        try:
            run = run_pipeline(slow_pipeline, {"size": 5}, store=store, progress=False, executor="queue",
                               broker_url=broker_url, queue_name=queue)
            again = run_pipeline(slow_pipeline, {"size": 5, "seconds": 0.5}, store=store, progress=False,
                                 executor="queue", broker_url=broker_url, queue_name=queue)
        finally:
            for process in workers:
                process.send_signal(signal.SIGTERM)  # a worker stops after its current step
            for process in workers:
                assert process.wait(timeout=120) == 0
        assert processes_with_environment("FSML_HOME", str(home)) == []  # no spare kernel left behind
        assert run.outputs["total"] == 10
        assert [step.status for step in again.steps] == ["cached", "done"]  # a changed parameter reran one step
        with reading(store.engine) as connection:
            from fsml_nb.db import pipeline_steps
            ran_by = set(connection.execute(select(pipeline_steps.c.worker).where(
                pipeline_steps.c.status == "done")).scalars())
        assert ran_by <= {f"{__import__('socket').gethostname()}:{process.pid}" for process in workers}
        assert len(ran_by) >= 1


REPOSITORY = Path(__file__).resolve().parent.parent


def processes_with_environment(variable: str, value: str) -> list[int]:
    "Process ids whose environment sets `variable` to `value` (a run's kernels and servers carry its FSML_HOME)."
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{variable}={value}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def interrupt(process: subprocess.Popen, ready, what: str, seconds: float = 600) -> None:
    "Wait until `ready()` is true (the evidence that `what` is under way), then Ctrl-C the process as a person would."
    deadline = time.time() + seconds
    while not ready():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {what}"
        assert time.time() < deadline, f"no sign of {what} within {seconds:.0f} s"
        time.sleep(0.2)
    for _ in range(3):  # Ctrl-C, and again if the first one landed where it was swallowed
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    raise AssertionError(f"the run did not stop within 90 s of Ctrl-C during {what}")


def test_ctrl_c_while_the_pool_holds_kernels_for_later_steps_leaves_no_kernel(slow_pipeline: Path, tmp_path: Path):
    for name in ("later", "last"):
        step_notebook(tmp_path / f"{name}.ipynb", "total: int = 0",
                      "import wave\nfrom fsml_nb.pipeline import record_outputs\nrecord_outputs(doubled=2 * total)")
    (tmp_path / "long.toml").write_text(slow_pipeline.read_text().replace('name = "slow"\n[[steps]]', 'name = "long"\n[[steps]]', 1)
                                        + '[[steps]]\nname = "later"\nnotebook = "later.ipynb"\nafter = ["slow"]\n'
                                        '[[steps]]\nname = "last"\nnotebook = "last.ipynb"\nafter = ["later"]\n')
    home = tmp_path / "home"
    env = {**clean_environment(), "FSML_HOME": str(home)}
    script = f"from fsml_nb.pipeline import run_pipeline\nrun_pipeline({str(tmp_path / 'long.toml')!r}, {{'seconds': 60.0}}, progress=False)"
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.DEVNULL, cwd=tmp_path)
    seen: list[int] = []

    def kernels_ahead_started() -> bool:
        "The runner, the slow step's kernel and the kernels started for the two steps after it (they carry FSML_HOME)."
        with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
            history = pipeline_history(store, "long") if (home / "fsml.db").exists() else []
        seen[:] = processes_with_environment("FSML_HOME", str(home))
        return bool(history) and history[0].steps.get("first") == "done" and len(seen) >= 4

    interrupt(process, kernels_ahead_started, "the kernels for the steps after the slow one", seconds=120)
    assert process.returncode != 0 and len(seen) >= 4
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
            for pid in processes_with_environment("FSML_HOME", str(home))}
    assert left == {}, f"left running after Ctrl-C: {left}; before it: {seen}"  # every kernel the pool held is gone
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        assert pipeline_history(store, "long")[0].steps == {"first": "done"}  # nothing else recorded as done
        resumed = run_pipeline(tmp_path / "long.toml", {"seconds": 0.0}, store=store, progress=False)
    assert [step.status for step in resumed.steps] == ["cached", "done", "done", "done"]
    assert resumed.outputs["doubled"] == 6


def test_ctrl_c_during_digits_training_then_the_next_run_starts_at_training(tmp_path: Path):
    home = tmp_path / "home"
    env = {**clean_environment(), "FSML_HOME": str(home), "FSML_PIPELINES": str(REPOSITORY / "pipelines")}
    fsml = [sys.executable, "-c", "import sys; from fsml_nb.cli import main; main(sys.argv[1:])"]
    run_digits = [*fsml, "pipeline", "run", "digits", "-p", "epochs=2"]
    first = subprocess.Popen(run_digits, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the evidence that training is under way: the checkpoint fit writes after its first epoch (of two)
    interrupt(first, lambda: any((home / "models").glob("*-e2-s0.safetensors")), "the first epoch of training")
    assert first.returncode != 0
    no_process_left(home, seconds=5)  # no kernel left behind (one still exiting gets 5 s; the failure names it)
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        stopped = pipeline_history(store, "digits")[0]
        assert (stopped.status, stopped.steps) == ("interrupted", {"import": "done"})  # train not recorded
        plan = subprocess.run([*run_digits, "--dry-run"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout
        assert "| import | cached (planned)" in plan and "| train | run (planned)" in plan, plan
        second = subprocess.Popen(run_digits, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        # stopped again once training has been recorded, so that the test does not export, serve and deploy
        interrupt(second, lambda: pipeline_history(store, "digits")[0].steps.get("train") == "done", "the train step")
        resumed = pipeline_history(store, "digits")[0]
        assert resumed.id != stopped.id
        assert (resumed.steps["import"], resumed.steps["train"]) == ("cached", "done")
        assert list(resumed.steps)[:2] == ["import", "train"]
    no_process_left(home, seconds=5)


LINEAGE_STEPS = {
    "train": ("dataset_version: str = ''",
              "import pathlib\nimport fsml_nb.repro\nfrom fsml_nb.pipeline import record_outputs\n"
              "from fsml_nb.store import Store\nfrom fsml_nb.train import TrainConfig, fit, registered_spec\n"
              "checkpoint = pathlib.Path('mlp.safetensors').absolute()\n"
              "with Store() as store:\n"
              "    fit(registered_spec('mnist1d-mlp'), dataset_version, store=store, progress=False,\n"
              "        checkpoint_path=checkpoint, config=TrainConfig(max_steps=40, batch_size=64, optimizer='adam',\n"
              "        lr=1e-2, weight_decay=0, schedule='constant', val_fraction=0))\n"
              "record_outputs(checkpoint=str(checkpoint))"),
    "export": ("checkpoint: str = ''\ndataset_version: str = ''",
               "import pathlib\nfrom fsml_nb.export import export_checkpoint\nfrom fsml_nb.pipeline import record_outputs\n"
               "from fsml_nb.store import Store\nfolder = pathlib.Path('mlp-export').absolute()\n"
               "with Store() as store:\n"
               "    export_checkpoint(checkpoint, folder, dataset_version, store=store, calibration_items=64)\n"
               "record_outputs(export_folder=str(folder))"),
    "register": ("export_folder: str = ''",
                 "from fsml_nb.pipeline import record_outputs\nfrom fsml_nb.registry import ModelRegistry\n"
                 "from fsml_nb.store import Store\nwith Store() as store:\n"
                 "    version = ModelRegistry(store).register(export_folder, 'lineage-mlp', reason='by a pipeline')\n"
                 "record_outputs(model_version=version.id)"),
}


def test_the_lineage_of_a_version_names_the_pipeline_steps_that_made_it_and_their_reports(tmp_path: Path,
                                                                                           monkeypatch):
    from fsml_nb.data import import_mnist1d
    from fsml_nb.registry import ModelRegistry

    home = tmp_path / "home"
    for key in [key for key in os.environ if key.startswith("FSML_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FSML_HOME", str(home))  # the steps' kernels open this store
    monkeypatch.setenv("FSML_KERNEL_KEEPER", "off")
    for name, (parameters, body) in LINEAGE_STEPS.items():
        step_notebook(tmp_path / f"{name}.ipynb", parameters, body)
    (tmp_path / "made.toml").write_text("".join(
        f'[[steps]]\nname = "{name}"\nnotebook = "{name}.ipynb"\n' + (f'after = ["{previous}"]\n' if previous else "")
        for name, previous in zip(LINEAGE_STEPS, [None, *list(LINEAGE_STEPS)[:-1]], strict=True)))
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        data = import_mnist1d(store, name="mnist1d-small", num_samples=400)
        run = run_pipeline(tmp_path / "made.toml", {"dataset_version": data.id}, store=store, progress=False)
        again = run_pipeline(tmp_path / "made.toml", {"dataset_version": data.id}, store=store, progress=False)
        assert [step.status for step in again.steps] == ["cached"] * 3
        lineage = ModelRegistry(store).lineage("lineage-mlp")
        assert lineage.version.id == run.outputs["model_version"]
        steps = [(origin["run_id"], origin["step"], origin["output"]) for origin in lineage.pipeline]
        assert steps == [(run.id, "train", "checkpoint"), (run.id, "export", "export_folder"),
                         (run.id, "register", "model_version")]  # the run that executed them, not the cached one
        for origin in lineage.pipeline:
            report = json.loads(Path(origin["report"]).read_bytes())
            assert report["metadata"]["papermill"]["parameters"]  # the executed notebook with what it was given
            assert Path(origin["html"]).read_bytes().lower().startswith(b"<!doctype html>")
        assert lineage.to_dict()["pipeline"] == list(lineage.pipeline)
    shown = subprocess.run([sys.executable, "-c", "import sys; from fsml_nb.cli import main; main(sys.argv[1:])",
                            "registry", "lineage", "lineage-mlp"], env={**clean_environment(), "FSML_HOME": str(home)},
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    for origin in lineage.pipeline:
        assert f"run `{run.id[:12]}`, step {origin['step']}" in shown and origin["html"] in shown, shown


# --- the kernel keeper -------------------------------------------------------------------

def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(0.2)


def no_process_left(home: Path, seconds: float = 30) -> None:
    "Wait until no process carries this FSML_HOME (keepers and kernels exit in the background); fail naming them."
    deadline = time.monotonic() + seconds
    while (left := processes_with_environment("FSML_HOME", str(home))) and time.monotonic() < deadline:
        time.sleep(0.2)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:160] for pid in left
                if Path(f"/proc/{pid}/cmdline").exists()}
    assert commands == {}, f"left running: {commands}"


@pytest.fixture
def keeper_home(tmp_path: Path, monkeypatch) -> Path:
    "A home of its own with the kernel keeper on; every keeper stopped, and no process left, afterwards."
    from fsml_nb.pipeline import stop_keepers

    home = tmp_path / "home"
    for key in [key for key in os.environ if key.startswith("FSML_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FSML_HOME", str(home))
    monkeypatch.setenv("FSML_KERNEL_KEEPER", "on")
    yield home
    stop_keepers(home)
    no_process_left(home)


def ready_kernels(folder: Path, count: int = 2, seconds: float = 180) -> dict[int, dict]:
    "The keeper's ready kernels by pid, once it has `count` of them."
    found: dict[int, dict] = {}

    def enough() -> bool:
        found.clear()
        for path in folder.glob("kernel-*.ready.json"):
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # claimed meanwhile
            found[info["pid"]] = info
        return len(found) >= count

    wait_until(enough, seconds, f"{count} ready kernels in {folder}")
    return dict(found)


def who_pipeline(folder: Path, imports: str = "", recorded: str = "") -> Path:
    "A one-step pipeline whose step records its kernel's pid and parent pid (and `recorded`)."
    step_notebook(folder / "who.ipynb", "size: int = 3",
                  f"import os\nimport wave\n{imports}from fsml_nb.pipeline import record_outputs\n"
                  f"record_outputs(pid=os.getpid(), parent=os.getppid(), size=size, {recorded})")
    (folder / "who.toml").write_text('name = "who"\n[[steps]]\nname = "who"\nnotebook = "who.ipynb"\n')
    return folder / "who.toml"


def test_the_next_run_takes_a_keeper_kernel_unless_a_module_changed_or_the_environment_differs(
        keeper_home: Path, tmp_path: Path, monkeypatch):
    from fsml_nb.pipeline import keeper_folder, keeper_status

    project = tmp_path / "project"  # a project module on the path, edited between two runs
    project.mkdir()
    (project / "fsml_keeper_helper.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(project))
    pipeline = who_pipeline(tmp_path, "import fsml_keeper_helper\n", "value=fsml_keeper_helper.VALUE")
    with Store(f"sqlite:///{keeper_home}/fsml.db", str(keeper_home / "blobs")) as store:
        first = run_pipeline(pipeline, {"size": 1}, store=store, progress=False)
        assert first.outputs["parent"] == os.getpid()  # no keeper yet: a kernel of the run's own
        kept = ready_kernels(keeper_folder())
        keeper = keeper_status()[0]
        assert keeper["running"] and {"wave", "fsml_keeper_helper"} <= set(keeper["modules"])
        assert all({"wave", "fsml_keeper_helper"} <= set(info["modules"]) for info in kept.values())
        second = run_pipeline(pipeline, {"size": 2}, store=store, progress=False)
        assert second.outputs["pid"] in kept and second.outputs["parent"] == keeper["pid"]
        assert second.outputs["value"] == 1
        assert not any(pid == second.outputs["pid"] for pid in processes_with_environment("FSML_HOME", str(keeper_home)))

        kept = ready_kernels(keeper_folder())  # the other one and the replacement of the used one
        (project / "fsml_keeper_helper.py").write_text("VALUE = 22\n")
        third = run_pipeline(pipeline, {"size": 3}, store=store, progress=False)
        assert third.outputs["value"] == 22  # never the stale module
        assert third.outputs["pid"] not in kept and third.outputs["parent"] == os.getpid()
        wait_until(lambda: not any(process_alive(pid) for pid in kept), 30, "exit of the stale kernels")

        ready_kernels(keeper_folder())  # kernels importing the new code
        monkeypatch.setenv("FSML_KEEPER_TEST_OTHER", "1")  # another environment: another keeper
        other = run_pipeline(pipeline, {"size": 4}, store=store, progress=False)
        assert other.outputs["parent"] == os.getpid()
        wait_until(lambda: sum(keeper["running"] for keeper in keeper_status()) == 2, 60, "a second keeper")
    fsml = [sys.executable, "-c", "import sys; from fsml_nb.cli import main; main(sys.argv[1:])"]
    shown = subprocess.run([*fsml, "pipeline", "keeper", "status"], capture_output=True, text=True, check=True).stdout
    assert shown.count("running (pid") == 2 and "fsml_keeper_helper" in shown, shown
    stopped = subprocess.run([*fsml, "pipeline", "keeper", "stop"], capture_output=True, text=True, check=True).stdout
    assert stopped == "stopped 2 kernel keeper(s)\n"
    assert [keeper["running"] for keeper in keeper_status()] == [False, False]
    no_process_left(keeper_home)


def test_runs_claiming_at_once_never_get_the_same_kernel(tmp_path: Path):
    folder = tmp_path / "keeper"
    folder.mkdir()
    for index in range(40):  # ready kernels (a process that stays alive stands for them)
        (folder / f"kernel-{index:012d}.ready.json").write_text(json.dumps({"pid": os.getpid(), "files": []}))
    claim = ("import sys\nfrom pathlib import Path\nfrom fsml_nb.pipeline import _claim_ready\n"
             "while (claim := _claim_ready(Path(sys.argv[1]))) is not None:\n    print(claim[0].name, flush=True)")
    claimers = [subprocess.Popen([sys.executable, "-c", claim, str(folder)], stdout=subprocess.PIPE, text=True)
                for _ in range(4)]
    claimed = [name for process in claimers for name in process.communicate(timeout=120)[0].split()]
    assert sorted(claimed) == [f"kernel-{index:012d}.claimed.json" for index in range(40)]  # each exactly once
    assert list(folder.glob("*.ready.json")) == []


def test_a_killed_keeper_leaves_runs_working_and_its_kernels_exit(keeper_home: Path, tmp_path: Path):
    from fsml_nb.pipeline import keeper_folder, keeper_status

    pipeline = who_pipeline(tmp_path)
    with Store(f"sqlite:///{keeper_home}/fsml.db", str(keeper_home / "blobs")) as store:
        run_pipeline(pipeline, {"size": 1}, store=store, progress=False)
        kept = ready_kernels(keeper_folder())
        keeper = keeper_status()[0]["pid"]
        os.kill(keeper, signal.SIGKILL)
        wait_until(lambda: not any(process_alive(pid) for pid in kept), 30, "exit of the killed keeper's kernels")
        after = run_pipeline(pipeline, {"size": 2}, store=store, progress=False)  # their ready files are still there
        assert after.outputs["parent"] == os.getpid() and after.outputs["pid"] not in kept
        wait_until(lambda: keeper_status()[0]["running"] and keeper_status()[0]["pid"] != keeper, 60, "a new keeper")


def test_ctrl_c_during_a_step_on_a_keeper_kernel_leaves_no_kernel_and_the_rerun_resumes(
        keeper_home: Path, slow_pipeline: Path, tmp_path: Path):
    env = {**clean_environment(), "FSML_HOME": str(keeper_home), "FSML_KERNEL_KEEPER": "on"}
    script = ("import sys\nfrom fsml_nb.pipeline import run_pipeline\n"
              f"run_pipeline({str(slow_pipeline)!r}, {{'seconds': float(sys.argv[1])}}, progress=False)")
    subprocess.run([sys.executable, "-c", script, "0"], env=env, cwd=tmp_path, check=True, stderr=subprocess.DEVNULL)
    folders = list((keeper_home / "kernels").iterdir())
    assert len(folders) == 1
    kept = ready_kernels(folders[0])
    process = subprocess.Popen([sys.executable, "-c", script, "60"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    claimed: list[int] = []

    def slow_step_on_a_keeper_kernel() -> bool:
        for path in folders[0].glob("kernel-*.claimed.json"):
            claimed.append(json.loads(path.read_text())["pid"])
            time.sleep(3)  # claimed: give the step time to start in it
            return True
        return False

    interrupt(process, slow_step_on_a_keeper_kernel, "the slow step on a keeper's kernel", seconds=120)
    assert process.returncode != 0 and claimed[0] in kept
    assert not process_alive(claimed[0])
    with Store(f"sqlite:///{keeper_home}/fsml.db", str(keeper_home / "blobs")) as store:
        assert pipeline_history(store, "slow")[0].status == "interrupted"
        assert pipeline_history(store, "slow")[0].steps == {"first": "cached"}
    subprocess.run([sys.executable, "-c", script, "0.5"], env=env, cwd=tmp_path, check=True, stderr=subprocess.DEVNULL)
    with Store(f"sqlite:///{keeper_home}/fsml.db", str(keeper_home / "blobs")) as store:
        assert pipeline_history(store, "slow")[0].steps == {"first": "cached", "slow": "done"}


def test_a_keeper_exits_when_idle_and_when_its_folder_is_removed(keeper_home: Path, monkeypatch):
    import shutil

    from fsml_nb.pipeline import _keeper_running, ensure_keeper, keeper_folder

    monkeypatch.setenv("FSML_KERNEL_KEEPER_IDLE", "2")
    idle = keeper_folder()
    assert ensure_keeper(idle, ["wave"])
    wait_until(lambda: (idle / "keeper.json").exists(), 60, "the keeper's start")
    assert not ensure_keeper(idle)  # one runs already: no second one
    wait_until(lambda: not _keeper_running(idle), 60, "the idle keeper's exit")
    assert "stopped: idle for 2 s" in (idle / "keeper.log").read_text()
    assert list(idle.glob("kernel-*")) == []
    no_process_left(keeper_home)

    monkeypatch.setenv("FSML_KERNEL_KEEPER_IDLE", "600")
    removed = keeper_folder()
    assert ensure_keeper(removed, ["wave"])
    kept = ready_kernels(removed)
    keeper = json.loads((removed / "keeper.json").read_text())["pid"]
    shutil.rmtree(removed)
    wait_until(lambda: not process_alive(keeper), 60, "the exit of the keeper whose folder was removed")
    assert kept
    no_process_left(keeper_home)


def test_keeper_off_starts_none_and_a_bad_setting_is_one_clear_error(tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FSML_HOME", str(home))
    pipeline = who_pipeline(tmp_path)
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        run = run_pipeline(pipeline, store=store, progress=False)  # conftest sets FSML_KERNEL_KEEPER=off
        assert run.outputs["parent"] == os.getpid() and not (home / "kernels").exists()
        monkeypatch.setenv("FSML_KERNEL_KEEPER", "sometimes")
        with pytest.raises(PipelineError, match="FSML_KERNEL_KEEPER must be auto, on or off, not 'sometimes'"):
            run_pipeline(pipeline, {"size": 2}, store=store, progress=False)
    no_process_left(home)
