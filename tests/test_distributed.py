"""a3c_core.distributed: ranks that agree on a config, average their models, count
together, write one run, stop together and resume (torchrun, gloo, this machine)."""

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from a3c_core import cli, distributed
from a3c_core.config import MAX_SEED, A3CConfig, ConfigError
from a3c_core.distributed import (
    DistributedTrainer,
    disagreement,
    flatten,
    join,
    leave,
    merge_,
    rank_config,
    world_from_env,
)
from a3c_core.runs import CHECKPOINT, lock_run_dir, read_log
from a3c_core.worker import EpisodeEnd
from tests.conftest import ROOT

TORCHRUN = Path(sys.executable).parent / "torchrun"
SMALL = [  # one worker of two games per rank, short rollouts, frequent syncs
    "--env",
    "Pong-v4",
    "--num-workers",
    "1",
    "--envs-per-worker",
    "2",
    "--rollout-len",
    "5",
    "--sync-every",
    "0.5",
    "--log-every",
    "1",
    "--checkpoint-every",
    "1",
    "--no-progress",
]
RANK_LINE = re.compile(r"rank (\d+): (\d+) of the session's (\d+) agent steps")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, port: int, tmpdir: Path) -> dict:
    """The environment torchrun would give rank `rank` of 2 (we start it by hand)."""
    tmpdir.mkdir(exist_ok=True)
    return {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TMPDIR": str(tmpdir),
        "PYTHONFAULTHANDLER": "1",
    }


def start(args, env, out: Path) -> subprocess.Popen:
    """A process in its own session, output in files (a full pipe would block it)."""
    with (
        open(out.with_suffix(".out"), "w") as o,
        open(out.with_suffix(".err"), "w") as e,
    ):
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=o, stderr=e, start_new_session=True
        )
    proc.out = out
    return proc


def output(proc) -> tuple[str, str]:
    return tuple(proc.out.with_suffix(s).read_text() for s in (".out", ".err"))


def stop_all(*procs) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def saved_steps(run_dir: Path) -> int:
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    return state["progress"]["agent_steps"]


# ---- in one process ----------------------------------------------------------


def test_merge_gives_exactly_the_mean_where_nothing_changed():
    torch.manual_seed(0)
    conv = torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last)
    tensors = [conv, torch.randn(5)]
    snapshot = flatten(tensors)
    mean = torch.randn_like(snapshot)
    merge_(tensors, snapshot, mean)
    assert torch.equal(flatten(tensors), mean)
    assert tensors[0].is_contiguous(memory_format=torch.channels_last)


def test_merge_keeps_the_updates_made_while_the_mean_was_computed():
    tensors = [torch.zeros(2, 3), torch.zeros(4)]
    snapshot = flatten(tensors)
    tensors[1] += 0.25  # a worker's Hogwild update during the all_reduce
    merge_(tensors, snapshot, torch.ones(10))
    assert torch.equal(tensors[0], torch.ones(2, 3))
    assert torch.equal(tensors[1], torch.full((4,), 1.25))


def test_disagreement_names_the_rank_and_every_field_that_differs():
    ours = dataclasses.asdict(A3CConfig())
    theirs = dataclasses.asdict(A3CConfig(env_id="Breakout-v4", lr=1e-3))
    every = [{"config": ours, "resume": False}] * 2 + [
        {"config": theirs, "resume": False}
    ]
    problem = disagreement(every)
    assert problem.startswith("rank 2 has another config than rank 0")
    assert "env_id 'Breakout-v4' (rank 0: 'Pong-v4')" in problem
    assert "lr 0.001 (rank 0: 0.0005)" in problem and "\n" not in problem
    assert disagreement([{"config": ours, "resume": True}] * 3) == ""


def test_disagreement_refuses_mixed_resume_and_reports_a_ranks_own_error():
    ours = {"config": dataclasses.asdict(A3CConfig()), "resume": True}
    mixed = disagreement([ours, {**ours, "resume": False}])
    assert "rank 1 was started without --resume, rank 0 with" in mixed
    failed = disagreement([ours, {"error": "unknown Atari game 'Pongg-v4'"}])
    assert failed == "rank 1: unknown Atari game 'Pongg-v4'"


def test_a_plain_run_has_no_world_and_a_half_set_environment_is_refused():
    assert world_from_env({}) is None
    with pytest.raises(ConfigError, match="not RANK, MASTER_ADDR, MASTER_PORT"):
        world_from_env({"WORLD_SIZE": "2"})
    launched = {"WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    with pytest.raises(ConfigError, match=r"RANK 2 is not in 0..1"):
        world_from_env({**launched, "RANK": "2"})
    world = world_from_env({**launched, "RANK": "1", "TORCHELASTIC_RESTART_COUNT": "3"})
    assert (world.rank, world.size, world.master_port, world.restart) == (
        1,
        2,
        29500,
        3,
    )


def test_errors_shared_between_ranks_are_the_clis_usage_errors():
    assert set(distributed.USAGE_ERRORS) == set(cli.USAGE_ERRORS)


def test_ranks_train_with_their_own_seed_and_nothing_else_changed():
    cfg = A3CConfig(lr=1e-3)
    assert rank_config(cfg, 0) == cfg
    assert rank_config(cfg, 1) == dataclasses.replace(cfg, seed=1_000_001)
    assert 0 <= rank_config(A3CConfig(seed=MAX_SEED), 5).seed <= MAX_SEED


# ---- two ranks in a gloo group (spawned processes) -------------------------------


def gather(flat: torch.Tensor) -> list[torch.Tensor]:
    every = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(every, flat)
    return every


def sync_two_ranks(rank: int, port: int, tmp: Path) -> None:
    """Rank `rank` of 2: start a trainer (no workers), drift, sync, check."""
    os.environ.update(rank_env(rank, port, tmp / "tmp"))
    torch.set_num_threads(1)
    world = world_from_env()
    join(world)
    try:
        cfg = rank_config(A3CConfig(num_workers=1, hidden_size=16), rank)
        trainer = DistributedTrainer(cfg, tmp / f"rank{rank}", None, world)
        params = list(trainer.model.parameters())
        start = flatten(params)
        first, second = gather(start)
        assert torch.equal(first, second)  # both start from rank 0's weights
        with torch.no_grad():
            for p in params:
                p.add_(rank + 1)  # the ranks drift apart: +1 and +2
        trainer.counters.add(steps=100 * (rank + 1), updates=rank + 1)
        trainer.handle(EpisodeEnd(score=-21.0 + rank, length=800))
        trainer.started = time.monotonic()
        trainer.sync(done=False)
        first, second = gather(flatten(params))
        assert torch.equal(first, second)  # identical after the sync
        torch.testing.assert_close(first, start + 1.5)  # their mean
        assert (trainer.counters.steps.value, trainer.counters.updates.value) == (
            300,
            3,
        )
        assert trainer.own_steps == 100 * (rank + 1)
        assert trainer.progress.episodes == 2  # both ranks' episodes, on both
        assert trainer.progress.mean_return == pytest.approx(0.99 * -21 + 0.01 * -20)
        assert not trainer.failure and not trainer.stop.is_set()
    finally:
        leave(world)


def test_after_a_sync_the_ranks_hold_identical_weights_and_summed_counts(tmp_path):
    torch_mp.spawn(sync_two_ranks, args=(free_port(), tmp_path), nprocs=2)


# ---- whole runs: ranks started by hand (as torchrun would), then torchrun ----------


def run_ranks(tmp_path: Path, run_dir: Path, flags=lambda rank: []) -> list:
    """Start ranks 0 and 1 of a small run in run_dir by hand (as torchrun would),
    rank r with flags(r) added, and wait until both have ended."""
    port = free_port()
    ranks = [
        start(
            [sys.executable, "-m", "a3c_core", "train", *SMALL]
            + ["--run-dir", str(run_dir), *flags(rank)],
            rank_env(rank, port, tmp_path / "tmp"),
            tmp_path / f"rank{rank}",
        )
        for rank in (0, 1)
    ]
    try:
        for proc in ranks:
            proc.wait(120)
    finally:
        stop_all(*ranks)
    return ranks


def test_ranks_with_different_configs_are_refused_before_training(tmp_path):
    ranks = run_ranks(
        tmp_path, tmp_path / "run", lambda rank: ["--lr", "0.001"] if rank else []
    )
    for proc in ranks:
        err = output(proc)[1].strip()
        assert proc.returncode == 2, err
        assert err == (
            "error: rank 1 has another config than rank 0: lr 0.001 "
            "(rank 0: 0.0005); start every rank with the same flags"
        )
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_run_folder_refused_on_rank_0_stops_every_rank_with_its_reason(tmp_path):
    run_dir = tmp_path / "run"
    with lock_run_dir(run_dir):  # another trainer is using the folder
        ranks = run_ranks(tmp_path, run_dir)
    errors = [output(proc)[1].strip() for proc in ranks]
    assert [proc.returncode for proc in ranks] == [2, 2], errors
    assert f"pid {os.getpid()}" in errors[0] and "\n" not in errors[0]
    assert errors[1] == errors[0].replace("error: ", "error: rank 0: ", 1)


def wait_for_checkpoint(run_dir: Path, procs, steps: int, timeout=180) -> None:
    """Wait until rank 0 saved a checkpoint with `steps` agent steps (a liveness
    wait: the machine may be loaded; fails with the ranks' output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        with contextlib.suppress(Exception):  # missing, or being renamed right now
            if saved_steps(run_dir) >= steps:
                return
        time.sleep(0.5)
    stop_all(*procs)
    pytest.fail("no checkpoint:\n" + "\n".join(map(str, map(output, procs))))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """Two ranks train until a checkpoint; then rank 1 (with its worker) is killed.
    Returns (run_dir, rank 0's process, seconds it took to stop, steps saved before
    the kill)."""
    tmp = tmp_path_factory.mktemp("killed")
    run_dir, port = tmp / "run", free_port()
    ranks = [
        start(
            [sys.executable, "-m", "a3c_core", "train", *SMALL]
            + ["--total-steps", "1000000", "--run-dir", str(run_dir)],
            rank_env(rank, port, tmp / "tmp1"),
            tmp / f"rank{rank}",
        )
        for rank in (0, 1)
    ]
    try:
        wait_for_checkpoint(run_dir, ranks, steps=50)
        before = saved_steps(run_dir)
        killed_at = time.monotonic()
        os.killpg(ranks[1].pid, signal.SIGKILL)  # the rank and its worker: a lost node
        ranks[0].wait(60)
        return run_dir, ranks[0], time.monotonic() - killed_at, before
    finally:
        stop_all(*ranks)


def test_killing_a_rank_stops_the_other_within_seconds_naming_it(killed_run):
    run_dir, rank0, seconds, before = killed_run
    err = output(rank0)[1].strip()
    assert rank0.returncode == 1, err
    assert re.fullmatch(
        r"error: rank 1 stopped answering \(killed, crashed or cut off: .*\); "
        r"the last good checkpoint is kept",
        err,
    )
    assert seconds < 30  # detection is at once; the rest is stopping the worker
    assert saved_steps(run_dir) >= before  # a complete checkpoint is there


def test_torchrun_resumes_a_killed_run_into_one_run_holding_every_ranks_steps(
    killed_run, tmp_path
):
    run_dir = killed_run[0]
    before = torch.load(run_dir / CHECKPOINT, weights_only=True)["progress"]
    kept = read_log(run_dir)[: before["log_rows"]]
    torchrun = start(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2"]
        + ["-m", "a3c_core", "train", "--resume", str(run_dir)]
        + ["--total-steps", str(before["agent_steps"] + 300), "--no-progress"],
        {**os.environ, "TMPDIR": str(tmp_path)},
        tmp_path / "torchrun",
    )
    try:
        torchrun.wait(240)
    finally:
        stop_all(torchrun)
    out, err = output(torchrun)
    assert torchrun.returncode == 0, out[-2000:] + err[-3000:]
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    session = state["progress"]["agent_steps"] - before["agent_steps"]
    assert session >= 300
    own = {int(r): (int(mine), int(all_)) for r, mine, all_ in RANK_LINE.findall(out)}
    assert sorted(own) == [0, 1] and {all_ for _, all_ in own.values()} == {session}
    assert sum(mine for mine, _ in own.values()) == session  # global = sum of ranks'
    assert all(mine > 0 for mine, _ in own.values())  # both ranks trained
    rows = read_log(run_dir)
    assert rows[: len(kept)] == kept and len(rows) == state["progress"]["log_rows"]
    assert rows[-1]["agent_steps"] == state["progress"]["agent_steps"]
    assert state["config"]["seed"] == 1  # rank 0's config, not rank 1's own seed
    # rank 1 wrote no checkpoint and no log rows, and its scratch folder is gone
    assert not list(tmp_path.glob("a3c-rank*")), list(tmp_path.iterdir())
