"""End-to-end training runs: short, real, with 2 worker processes."""

import contextlib
import dataclasses
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from a3c_core.checkpoint import atomic_save
from a3c_core.cli import main
from a3c_core.config import A3CConfig
from a3c_core.runs import CHECKPOINT, MODEL, read_log
from a3c_core.train import TrainingError, shared_model, train
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


def test_shared_model_is_seeded_shared_channels_last_with_its_adam():
    cfg = A3CConfig(env_id="Pong-v4")
    model, optimizer = shared_model(cfg)
    again, _ = shared_model(cfg)
    other, _ = shared_model(dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert torch.equal(model.conv1.weight, again.conv1.weight)  # the seed decides
    assert not torch.equal(model.conv1.weight, other.conv1.weight)
    assert all(p.is_shared() for p in model.parameters())  # the workers step these
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.actor_linear.out_features == 6  # Pong's actions
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert optimizer.param_groups[0]["lr"] == cfg.lr


def test_two_workers_train_then_resume_with_counters_continuing(tmp_path):
    first = train(A3CConfig(total_steps=2000, **QUICK), tmp_path, show_progress=False)
    assert first.agent_steps >= 2000 and first.updates == first.agent_steps // 20
    saved = checkpoint(tmp_path)
    assert saved["progress"]["agent_steps"] == first.agent_steps
    assert saved["optimizer"]["state"][0]["step"].item() == first.updates
    assert (tmp_path / MODEL).exists() and len(read_log(tmp_path)) == first.log_rows
    files = {p.name for p in tmp_path.iterdir()}  # no lock or fence left behind
    assert files == {CHECKPOINT, MODEL, "config.json", "log.csv"}

    second = train(
        A3CConfig(total_steps=3000, **QUICK), tmp_path, resume=True, show_progress=False
    )
    assert second.agent_steps >= 3000 and second.updates == second.agent_steps // 20
    rows = read_log(tmp_path)
    steps = [int(r["agent_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == second.agent_steps
    assert float(rows[-1]["elapsed_s"]) > float(rows[first.log_rows - 1]["elapsed_s"])


def test_learn_groups_make_one_update_per_group_and_log_losses_per_agent_step(
    tmp_path,
):
    cfg = A3CConfig(total_steps=1000, **{**QUICK, "learn_groups": 2})
    result = train(cfg, tmp_path, show_progress=False)
    assert result.updates == result.agent_steps // 10  # 10 steps x 1 game each
    assert checkpoint(tmp_path)["optimizer"]["state"][0]["step"] == result.updates
    entropies = [float(r["entropy"]) for r in read_log(tmp_path) if r["entropy"]]
    # per agent step, at most ln 6 (Pong's 6 actions), and near it at first: the
    # young policy is near uniform (a divisor twice too large would give about 0.9)
    assert entropies[0] > 1.5 and all(e <= 1.7918 for e in entropies)


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


def worker_pids(run) -> list[int]:
    """The run's workers: the trainer's children that multiprocessing spawned."""
    children = subprocess.run(
        ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
    ).stdout.split()
    return [
        int(pid)
        for pid in children
        if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    ]


def live_processes(pgid: int) -> list[int]:
    """Processes of group `pgid` that are alive (zombies, dead but not yet reaped by
    whoever adopted them, do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                alive.append(int(stat.parent.name))
    return alive


def wait_until_gone(pids_of, timeout=30.0) -> list[int]:
    """Poll `pids_of()` until it is empty or `timeout` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    while (left := pids_of()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_signal_to_the_whole_group_saves_a_final_checkpoint_and_exits_0(
    tmp_path, signum
):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 500)
    os.killpg(run.pid, signum)  # docker stop, systemd, Slurm, Ctrl-C in a terminal
    out, err = finish(run)
    assert run.returncode == 0, err
    assert f"{signum.name}: stopping" in out + err
    steps = checkpoint(tmp_path)["progress"]["agent_steps"]
    assert steps == int(read_log(tmp_path)[-1]["agent_steps"])
    assert wait_until_gone(lambda: live_processes(run.pid)) == []


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 200)
    workers = worker_pids(run)
    assert len(workers) == 2
    os.kill(run.pid, signal.SIGKILL)  # the trainer alone: no chance to stop them
    run.wait(30)

    def alive():
        return [pid for pid in live_processes(run.pid) if pid in workers]

    assert wait_until_gone(alive) == []


def test_a_second_trainer_on_a_run_folder_is_refused_naming_the_first(tmp_path, capsys):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 200)
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"in use by another trainer (pid {run.pid})" in err and err.count("\n") == 1
    assert "cannot write" not in err  # not dressed up as a full disk
    os.killpg(run.pid, signal.SIGTERM)
    out, err = finish(run)
    assert run.returncode == 0, err
    steps = [r["agent_steps"] for r in read_log(tmp_path)]
    assert steps == sorted(steps)  # one writer: the log never went back


def test_every_checkpoint_taken_during_training_is_one_consistent_snapshot(tmp_path):
    """Adam's step count, the update count and the agent steps agree in every
    checkpoint, though the workers keep updating while it is written: no update is
    in a checkpoint without its count, or counted without being in it."""
    seen, done = [], threading.Event()

    def watch():  # read each checkpoint as it appears
        while not done.is_set():
            with contextlib.suppress(Exception):  # not there yet
                seen.append(checkpoint(tmp_path))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        cfg = A3CConfig(total_steps=4000, **dict(QUICK, checkpoint_every=0.2))
        train(cfg, tmp_path, show_progress=False)
    finally:
        done.set()
        watcher.join()
    assert len({s["progress"]["updates"] for s in seen}) >= 3
    for state in seen:
        updates = state["progress"]["updates"]
        adam_steps = {s["step"].item() for s in state["optimizer"]["state"].values()}
        # Hogwild: two workers' `step += 1` on one shared step tensor can race and
        # lose an increment (seen under load), so a step may lag the count a little;
        # an update stepped but not yet counted would put a step above it.
        assert max(adam_steps) <= updates, state["progress"]
        assert min(adam_steps) >= 0.95 * updates, state["progress"]
        assert state["progress"]["agent_steps"] == updates * 10 * 2  # T * K each


def full_disk(obj, f):
    f.write(b"the start of a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_stops_the_run_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    train(A3CConfig(total_steps=400, **QUICK), tmp_path, show_progress=False)
    before = (tmp_path / CHECKPOINT).read_bytes()
    monkeypatch.setattr(torch, "save", full_disk)  # here only: workers are spawned
    path = tmp_path / CHECKPOINT
    with pytest.raises(TrainingError, match=f"cannot write {path} .No space left"):
        cfg = A3CConfig(total_steps=100_000, **QUICK)
        train(cfg, tmp_path, resume=True, show_progress=False)
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_a_dead_worker_stops_the_run_with_an_error(tmp_path):
    run = start_cli_run(tmp_path, "--total-steps", "100000")
    wait_for_steps(run, tmp_path, 200)
    os.kill(worker_pids(run)[0], signal.SIGKILL)
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


def test_the_trainer_cuts_the_lr_on_a_plateau_for_the_workers_and_a_resume(tmp_path):
    from a3c_core.checkpoint import training_state
    from a3c_core.train import Trainer

    cfg = A3CConfig(env_id="Pong-v4", lr_plateau_cuts=1, lr_plateau_window=2,
                    lr_plateau_patience=1)  # fmt: skip
    trainer = Trainer(cfg, tmp_path)
    for steps, score in enumerate([-21.0, -21.0, -19.0, -19.0, -20.0, -20.0]):
        trainer.record_episode(score, steps)  # windows of 2 steps: -21, -19, ...
    assert trainer.progress.lr_cuts == trainer.counters.lr_cuts.value == 0
    trainer.record_episode(-21.0, 6)  # closes the third window (-20): no new best
    assert trainer.progress.lr_cuts == trainer.counters.lr_cuts.value == 1
    for steps in range(7, 12):  # lower and lower, but no cut is left
        trainer.record_episode(-21.0, steps)
    assert trainer.progress.lr_cuts == trainer.counters.lr_cuts.value == 1
    assert trainer.progress.episodes == 12 and trainer.progress.mean_return < -20
    state = training_state(
        trainer.model, trainer.optimizer, cfg, dataclasses.asdict(trainer.progress)
    )
    resumed = Trainer(cfg, tmp_path, state)
    assert resumed.counters.lr_cuts.value == 1  # what the workers' lr is made from
    assert resumed.plateau == trainer.plateau  # the test goes on where it was


def test_a_resumed_trainer_goes_on_with_the_plateau_test_it_saved(tmp_path):
    from a3c_core.checkpoint import training_state
    from a3c_core.train import Trainer

    cfg = A3CConfig(env_id="Pong-v4", lr_plateau_cuts=1, lr_plateau_window=2,
                    lr_plateau_patience=1)  # fmt: skip
    trainer = Trainer(cfg, tmp_path)
    for steps, score in enumerate([-21.0, -21.0, -19.0, -19.0, -20.0]):
        trainer.record_episode(score, steps)  # windows of 2 steps: -21, -19: best
    state = training_state(
        trainer.model, trainer.optimizer, cfg, dataclasses.asdict(trainer.progress)
    )
    resumed = Trainer(cfg, tmp_path, state)
    assert resumed.plateau == trainer.plateau and resumed.plateau.best == -19.0
    resumed.record_episode(-20.0, 5)
    resumed.record_episode(-21.0, 6)  # closes window 3 (mean -20): no new best
    assert resumed.progress.lr_cuts == 1  # as the run without the resume would
