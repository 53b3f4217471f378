"""End-to-end training runs: short, real, with 2 worker processes."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from a3c_core.checkpoint import atomic_save
from a3c_core.config import A3CConfig
from a3c_core.runs import CHECKPOINT, MODEL, read_log
from a3c_core.train import TrainingError, train
from tests.conftest import ROOT

QUICK = dict(
    num_workers=2,
    envs_per_worker=2,
    rollout_len=10,
    log_every=1.0,
    checkpoint_every=1.0,
)


def checkpoint(run_dir) -> dict:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)


def test_two_workers_train_then_resume_with_counters_continuing(tmp_path):
    first = train(A3CConfig(total_steps=2000, **QUICK), tmp_path, show_progress=False)
    assert first.agent_steps >= 2000 and first.updates == first.agent_steps // 20
    saved = checkpoint(tmp_path)
    assert saved["progress"]["agent_steps"] == first.agent_steps
    assert saved["optimizer"]["state"][0]["step"].item() == first.updates
    assert (tmp_path / MODEL).exists() and len(read_log(tmp_path)) == first.log_rows

    second = train(
        A3CConfig(total_steps=3000, **QUICK), tmp_path, resume=True, show_progress=False
    )
    assert second.agent_steps >= 3000 and second.updates == second.agent_steps // 20
    rows = read_log(tmp_path)
    steps = [int(r["agent_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == second.agent_steps
    assert float(rows[-1]["elapsed_s"]) > float(rows[first.log_rows - 1]["elapsed_s"])


def start_cli_run(run_dir, *extra):
    """Start a CLI training run in its own process group; its output goes to files.

    Files, not pipes: a pipe nobody reads while the run goes on could fill and block it.
    PYTHONFAULTHANDLER lets `wait_for_steps` dump every stack if the run hangs.
    """
    args = [
        sys.executable,
        "-m",
        "a3c_core",
        "train",
        "--env",
        "Pong-v4",
        "--num-workers",
        "2",
        "--envs-per-worker",
        "2",
        "--rollout-len",
        "10",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
        *extra,
    ]
    out_dir = run_dir.parent / f"{run_dir.name}-output"
    out_dir.mkdir()
    with open(out_dir / "stdout", "w") as out, open(out_dir / "stderr", "w") as err:
        run = subprocess.Popen(
            args + ["--run-dir", str(run_dir)],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
    run.out_dir = out_dir
    return run


def finish(run, timeout=60) -> tuple[str, str]:
    """Wait for the run to end; returns its stdout and stderr."""
    run.wait(timeout)
    return tuple((run.out_dir / name).read_text() for name in ("stdout", "stderr"))


def wait_for_steps(run, run_dir, steps, timeout=300):
    """Wait for a checkpoint with `steps` agent steps; fail with the run's output.

    The timeout is generous: this waits for the run to be alive, it does not time it
    (CI machines are shared and slow at times).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        if (run_dir / CHECKPOINT).exists():
            try:
                if checkpoint(run_dir)["progress"]["agent_steps"] >= steps:
                    return
            except Exception:
                pass  # being renamed right now
        time.sleep(0.5)
    if run.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGABRT)  # the fault handler prints every stack
            time.sleep(2)
            os.killpg(run.pid, signal.SIGKILL)
    out, err = finish(run)
    pytest.fail(
        f"no checkpoint with {steps} steps (run exit code {run.returncode})\n"
        f"stdout:\n{out[-3000:]}\nstderr:\n{err[-6000:]}"
    )


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 1000)
    time.sleep(1.5)
    os.killpg(run.pid, signal.SIGKILL)  # trainer and workers, no chance to clean up
    run.wait(30)
    saved = checkpoint(tmp_path)  # complete, never half-written
    kept = saved["progress"]["log_rows"]
    resumed = train(
        A3CConfig(total_steps=saved["progress"]["agent_steps"] + 800, **QUICK),
        tmp_path,
        resume=True,
        show_progress=False,
    )
    assert resumed.agent_steps >= saved["progress"]["agent_steps"] + 800
    rows = read_log(tmp_path)
    assert int(rows[kept]["agent_steps"]) >= int(rows[kept - 1]["agent_steps"])
    assert len(rows) == resumed.log_rows  # rows written after the checkpoint were cut


def test_sigterm_stops_cleanly_with_a_final_checkpoint(tmp_path):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 500)
    run.send_signal(signal.SIGTERM)
    out, err = finish(run)
    assert run.returncode == 0, err
    assert "SIGTERM" in out + err
    steps = checkpoint(tmp_path)["progress"]["agent_steps"]
    assert steps == int(read_log(tmp_path)[-1]["agent_steps"])


def test_a_dead_worker_stops_the_run_with_an_error(tmp_path):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 200)
    children = subprocess.run(
        ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
    ).stdout.split()
    workers = [
        pid for pid in children if "spawn_main" in open(f"/proc/{pid}/cmdline").read()
    ]
    os.kill(int(workers[0]), signal.SIGKILL)
    out, err = finish(run)
    assert run.returncode == 1
    assert "died with exit code -9" in err and "Traceback" not in err


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    train(A3CConfig(total_steps=400, **QUICK), tmp_path, show_progress=False)
    state = checkpoint(tmp_path)
    state["model"]["actor_linear.bias"][:] = float("nan")  # poisoned weights
    atomic_save(state, tmp_path / CHECKPOINT)
    poisoned = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(TrainingError, match="NaN"):
        train(
            A3CConfig(total_steps=2000, **QUICK),
            tmp_path,
            resume=True,
            show_progress=False,
        )
    assert (tmp_path / CHECKPOINT).read_bytes() == poisoned  # not overwritten


def test_train_minutes_stops_the_run_and_a_resume_goes_on_to_the_budget(tmp_path):
    budget = dict(QUICK, total_steps=10**9)
    first = train(
        A3CConfig(train_minutes=0.05, **budget), tmp_path, show_progress=False
    )
    assert 3.0 <= first.elapsed_s < 15.0 and first.agent_steps < 10**9
    second = train(
        A3CConfig(train_minutes=0.3, **budget),
        tmp_path,
        resume=True,
        show_progress=False,
    )
    assert 18.0 <= second.elapsed_s < 35.0 and second.agent_steps > first.agent_steps
