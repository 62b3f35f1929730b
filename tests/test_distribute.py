"""The training loop under tf.distribute.

MirroredStrategy on two logical CPUs computes the same per-step losses as one device on the same
global batch; MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 checkpoints only
on the chief and, launched again, resumes every worker from the chief's checkpoint.

Logical devices and the multi-worker cluster must be set up before TensorFlow initialises, so
each configuration runs in a fresh interpreter (tests/distribute_worker.py) that reports JSON.
"""
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from jlml_tf.inference import run_dir

from conftest import PROJECT_ROOT

WORKER = PROJECT_ROOT / "tests" / "distribute_worker.py"
# A guard against hangs (a worker waiting for a collective its peer never joins), not a timing
# assertion: the processes are killed and the test fails instead of blocking CI.
TIMEOUT_SECONDS = 240
# Not 0: two replicas sum per-example losses, gradients and batch-norm moments in a different
# order than one device (per replica, then an all-reduce), and float32 addition is not
# associative. Measured differences are ~1e-6 relative; a replica-scaling bug is a factor.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-7
COMPARED = ("loss", "ce_global", "ce_local", "global_group_lasso", "local_exclusive_lasso")


@pytest.fixture
def model_json(tiny_model_config):
    return _model_json(tiny_model_config)


def _model_json(tiny_model_config, **changes) -> str:
    # Synchronised batch norm: with per-replica statistics over half the batch the two runs
    # would differ by design (per-replica BN is a different model, not a rounding difference).
    cfg = dataclasses.replace(tiny_model_config, num_classes=4, sync_batch_norm=True, **changes)
    return json.dumps(cfg.to_dict())


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _run_together(jobs: list[tuple[str, list[str], dict]], log_dir: pathlib.Path) -> None:
    """Starts every (name, argv, env) job at once; all must exit 0 within TIMEOUT_SECONDS.

    As soon as one fails (or time runs out) the others are killed: a multi-worker peer of a
    failed worker would otherwise wait on its collectives until the timeout.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for name, argv, env in jobs:
            log = open(log_dir / f"{name}.log", "w")
            procs.append((name, subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log,
                                                 stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            codes = [p.poll() for _, p, _ in procs]
            if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.5)
    finally:
        for _, p, log in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
    failed = [(name, p.returncode) for name, p, _ in procs if p.returncode != 0]
    if failed:
        tails = "\n".join(f"--- {name} ---\n{(log_dir / f'{name}.log').read_text()[-3000:]}"
                          for name, _, _ in procs)
        pytest.fail(f"{failed} (exit code -9: killed after an error elsewhere or after "
                    f"{TIMEOUT_SECONDS}s)\n{tails}")


def _worker_argv(mode: str, model_json: str, run: pathlib.Path, out: pathlib.Path, *flags):
    return [sys.executable, os.fspath(WORKER), mode, f"--model={model_json}",
            f"--run_dir={run}", f"--out={out}", *flags]


@pytest.mark.slow  # two TensorFlow processes at once
def test_mirrored_on_two_cpus_matches_one_device(tmp_path, tiny_model_config):
    # Four stripes: on this model one and two replicas measured within 2e-6 over the three
    # steps. On the two-stripe tiny model the losses drift apart (1e-5 at step 2, 1e-3 at
    # step 3) from one stripe: after one step its batch-norm offsets differ by up to 1e-3
    # (every other stream's by 1e-5 or less), a spread confined to one stream, not the
    # replica-wide factor a scaling bug would be.
    model_json = _model_json(tiny_model_config, num_stripes=4)
    steps = 3  # the whole first epoch: 24 images, global batch 8 (4 per replica)
    jobs = {"default": ["--strategy=default"],
            "mirrored": ["--strategy=mirrored", "--cpu_devices=2"]}
    _run_together([(name, _worker_argv("steps", model_json, tmp_path / name,
                                       tmp_path / f"{name}.json", f"--steps={steps}",
                                       "--batch_size=8", *flags), _env())
                   for name, flags in jobs.items()], tmp_path / "logs")
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in jobs)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert len(one["losses"]) == len(two["losses"]) == steps
    # The steps train: later losses differ from the first, so a wrong gradient scale on two
    # replicas (a different update) shows in steps 2 and 3, not only the reported values.
    assert abs(one["losses"][-1]["loss"] - one["losses"][0]["loss"]) > 0.1
    worst = 0.0
    for step, (a, b) in enumerate(zip(one["losses"], two["losses"]), start=1):
        assert set(COMPARED) <= set(a) and set(a) == set(b)
        for key in COMPARED:
            assert a[key] > 0
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=LOSS_ATOL), \
                f"step {step} {key}: one device {a[key]!r}, two replicas {b[key]!r}"
            worst = max(worst, abs(a[key] - b[key]) / abs(a[key]))
    print(f"largest relative loss difference, 1 vs 2 replicas: {worst:.2e}")


@pytest.mark.slow  # two TensorFlow processes at once
def test_distillation_on_two_replicas_averages_each_replicas_pairs(tmp_path, model_json):
    """Each replica ranks the pairs within its own share of the batch: two replicas report the
    mean of the two halves' terms, one device the whole batch's (computed outside the step from
    the same weights and batch), and the rest of the loss is the same."""
    weight = 2.0
    jobs = {"default": ["--strategy=default"],
            "mirrored": ["--strategy=mirrored", "--cpu_devices=2"]}
    _run_together([(name, _worker_argv("steps", model_json, tmp_path / name,
                                       tmp_path / f"{name}.json", "--steps=1", "--batch_size=8",
                                       f"--distill_weight={weight}", *flags), _env())
                   for name, flags in jobs.items()], tmp_path / "logs")
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in jobs)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    (a,), (b,) = one["losses"], two["losses"]
    expected = one["distill_expected"]
    assert expected["slices"] != pytest.approx(expected["whole"], rel=0.01)  # tells them apart
    assert a["distill"] == pytest.approx(expected["whole"], rel=1e-4)
    assert b["distill"] == pytest.approx(expected["slices"], rel=1e-4)
    assert b["loss"] - weight * b["distill"] == pytest.approx(a["loss"] - weight * a["distill"],
                                                              rel=LOSS_RTOL, abs=1e-5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cluster(model_json: str, run: pathlib.Path, epochs: int, out_dir: pathlib.Path):
    """Two MultiWorkerMirroredStrategy workers (worker 0 is the chief) training `run`."""
    out_dir.mkdir(parents=True)
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    jobs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        jobs.append((f"worker{index}",
                     _worker_argv("fit", model_json, run, out_dir / f"worker{index}.json",
                                  "--strategy=multi_worker", f"--epochs={epochs}",
                                  "--batch_size=8", "--checkpoint_every_steps=2"),
                     _env(TF_CONFIG=json.dumps(tf_config))))
    _run_together(jobs, out_dir)
    return [json.loads((out_dir / f"worker{index}.json").read_text()) for index in range(2)]


def _assert_only_chief_wrote(run: pathlib.Path) -> None:
    # The non-chief's throw-away checkpoints (RUN/tmp_worker1) are gone; no log or summaries.
    assert sorted(os.listdir(run)) == ["checkpoints", "tensorboard", "train_log.jsonl"]
    stray = [p for p in run.rglob("*") if p.is_file() and p.parent != run / "checkpoints"
             and (p.name == "checkpoint" or p.name.startswith("ckpt"))]
    assert stray == []


def _assert_same_weights(chief: dict, other: dict) -> None:
    assert chief["weights"].keys() == other["weights"].keys()
    for name, value in chief["weights"].items():
        assert other["weights"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


@pytest.mark.slow  # two launches of two TensorFlow processes: 105-165 s measured on 2 loaded CPUs
def test_multi_worker_chief_checkpoints_and_all_workers_resume(tmp_path, model_json):
    run = tmp_path / "run"
    chief, other = _launch_cluster(model_json, run, epochs=1, out_dir=tmp_path / "first")
    assert (chief["chief"], other["chief"]) == (True, False)
    assert chief["replicas"] == other["replicas"] == 2  # one CPU per worker
    for report in (chief, other):
        assert (report["start_step"], report["step"], report["total_steps"]) == (0, 3, 3)
    saved = run_dir.latest_checkpoint(run)
    assert saved is not None and saved.endswith("ckpt-3")
    _assert_only_chief_wrote(run)
    _assert_same_weights(chief, other)

    # Again with more epochs: both workers (the non-chief has no checkpoint of its own) resume
    # from the chief's ckpt-3, else they would disagree on the step and the collectives fail.
    chief, other = _launch_cluster(model_json, run, epochs=2, out_dir=tmp_path / "second")
    for report in (chief, other):
        assert (report["start_step"], report["step"], report["total_steps"]) == (3, 6, 6)
    assert run_dir.latest_checkpoint(run).endswith("ckpt-6")
    _assert_only_chief_wrote(run)
    _assert_same_weights(chief, other)
    events = [json.loads(line) for line in open(run / "train_log.jsonl")]
    assert [(e["event"], e["step"]) for e in events if e["event"] != "checkpoint"] == [
        ("start", 0), ("finished", 3), ("start", 3), ("finished", 6)]
    assert [e["total_steps"] for e in events if e["event"] == "start"] == [3, 6]
