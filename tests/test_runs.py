import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys

import pytest

from a3c_core.config import A3CConfig
from a3c_core.optim import Plateau
from a3c_core.runs import (
    CONFIG,
    LOCK,
    LOG,
    LOG_COLUMNS,
    PRETRAINED,
    FileAccessError,
    Progress,
    changed_at,
    check_writable,
    config_at,
    game_dir,
    lock_run_dir,
    log_row,
    open_log,
    read_log,
    record_config_changes,
    training_info,
)
from a3c_core.worker import UpdateDone
from tests.conftest import ROOT


def test_read_log_gives_ints_floats_and_none_for_empty_cells(tmp_path):
    updates = [UpdateDone(8.0, 4.0, 2.0, 16.0), UpdateDone(4.0, 2.0, 1.0, 8.0)]
    with open_log(tmp_path, keep_rows=0) as log:
        log.write(",".join(map(str, log_row(Progress(), [], 40, 0.0, 5e-4))) + "\n")
        p = Progress(agent_steps=80, episodes=2, updates=2, elapsed_s=61.25)
        p.mean_return = -20.5
        log.write(",".join(map(str, log_row(p, updates, 40, 12.34, 1.25e-4))) + "\n")
    first, second = read_log(tmp_path)
    assert list(first) == LOG_COLUMNS
    assert first["mean_return"] is None and first["loss"] is None
    assert second == {
        "elapsed_s": 61.2,  # written with one decimal
        "agent_steps": 80,
        "episodes": 2,
        "updates": 2,
        "mean_return": -20.5,
        "loss": 0.15,  # means per agent step: (8 + 4) / (40 * 2)
        "policy_loss": 0.075,
        "value_loss": 0.0375,
        "entropy": 0.3,
        "steps_per_s": 12.3,
        "lr": 1.25e-4,
    }
    assert all(type(second[k]) is int for k in ("agent_steps", "episodes", "updates"))
    assert read_log(tmp_path / "log.csv") == [first, second]  # a file works too


def test_training_info_is_the_last_row_of_the_log_or_nothing(tmp_path):
    assert training_info(tmp_path) == {}  # baby-a3c's folders hold no log
    for folder in sorted(PRETRAINED.glob("*/log.csv")):
        last = read_log(folder.parent)[-1]
        info = training_info(folder.parent)
        assert info == {
            "agent_steps": last["agent_steps"],
            "hours": round(last["elapsed_s"] / 3600, 2),
        }


def resumed_twice(run_dir) -> A3CConfig:
    """A run started with lr 5e-4, resumed at 1000 agent steps with lr 1e-4 and a
    new log interval, and at 3000 with more total steps; returns its latest config."""
    first = A3CConfig(lr=5e-4)
    second = dataclasses.replace(first, lr=1e-4, log_every=30.0)
    third = dataclasses.replace(second, total_steps=80_000_000)
    record_config_changes(run_dir, first, second, 1000)
    record_config_changes(run_dir, second, third, 3000)
    (run_dir / CONFIG).write_text(third.to_json())
    return third


def test_config_at_undoes_the_changes_recorded_after_the_step(tmp_path):
    latest = resumed_twice(tmp_path)
    assert config_at(tmp_path, 999) == A3CConfig(lr=5e-4)
    before_more_steps = dataclasses.replace(latest, total_steps=40_000_000)
    assert config_at(tmp_path, 1000) == before_more_steps
    assert config_at(tmp_path, 10**9) == latest


def test_changed_at_gives_the_learning_fields_a_resume_changed_at_that_step(tmp_path):
    resumed_twice(tmp_path)
    assert changed_at(tmp_path, 1000) == {"lr": [5e-4, 1e-4]}  # log_every: run control
    assert changed_at(tmp_path, 3000) == {}  # only total_steps changed
    assert changed_at(tmp_path, 2000) == {}


def test_progress_from_a_checkpoint_skips_keys_it_does_not_know():
    saved = dataclasses.asdict(Progress(agent_steps=5, mean_return=1.5))
    assert Progress.from_dict({**saved, "retired_field": 1}) == Progress(
        5, 0, 0, 0.0, 1.5
    )


def plateau_state(**changes) -> dict:
    """A state Plateau.state() could return (a window closed, one open), changed."""
    plateau = Plateau(window=10, patience=3)
    for steps, score in enumerate([-21.0, -20.0, -19.0]):
        plateau.stalled(score, 10 * steps)
    return {**plateau.state(), **changes}


@pytest.mark.parametrize(
    "key,value",
    [
        ("agent_steps", -1),
        ("updates", 1.5),
        ("episodes", True),
        ("log_rows", None),
        ("elapsed_s", "1"),
        ("elapsed_s", -0.5),
        ("elapsed_s", math.inf),
        ("mean_return", math.nan),
        ("mean_return", "-20"),
        ("plateau", None),
        ("plateau", {"total": 1.0}),  # Plateau.state() has every key
        ("plateau", plateau_state(count=0)),  # an open window without an episode
        ("plateau", plateau_state(best=math.nan)),
        ("plateau", plateau_state(stale=-1)),
        ("plateau", plateau_state(total=math.inf)),
        ("plateau", plateau_state(squares=-1.0)),
        ("plateau", plateau_state(floor=math.nan)),
        ("plateau", plateau_state(start=None)),  # no window opened, yet one closed
    ],
)
def test_progress_from_a_checkpoint_refuses_values_no_run_saves(key, value):
    with pytest.raises(ValueError, match=f"progress {key} is"):
        Progress.from_dict({key: value})


def test_progress_from_a_checkpoint_keeps_what_runs_save():
    opened = Plateau(10, 3)
    opened.stalled(-20.0, 3)  # best still -inf: no window closed yet
    plateaus = [{}, Plateau(10, 3).state(), opened.state(), plateau_state()]
    saves = [Progress(3, 1, 2, 0.25, -20.5, 4, 1, plateau) for plateau in plateaus]
    for saved in [Progress(), *saves]:
        assert Progress.from_dict(dataclasses.asdict(saved)) == saved


def test_game_dir_names_the_run_folder_of_v4_and_v5_ids():
    assert game_dir("Pong-v4") == "pong-v4" and game_dir("ALE/Pong-v5") == "ale-pong-v5"
    for config in PRETRAINED.glob(f"*/{CONFIG}"):
        assert config.parent.name == game_dir(json.loads(config.read_text())["env_id"])


def test_cutting_the_log_back_never_truncates_the_only_copy(tmp_path, monkeypatch):
    with open_log(tmp_path, keep_rows=0) as log:
        for steps in (80, 160, 240):
            log.write(
                ",".join(map(str, log_row(Progress(steps), [], 40, 1.0, 5e-4))) + "\n"
            )
    before = (tmp_path / LOG).read_bytes()

    def full_disk(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)  # the moment the cut log goes in
    with pytest.raises(FileAccessError, match=f"cannot write {tmp_path / LOG}"):
        open_log(tmp_path, keep_rows=1)
    assert (tmp_path / LOG).read_bytes() == before  # whole, not empty
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOG]  # no log.csv.tmp
    monkeypatch.undo()
    open_log(tmp_path, keep_rows=1).close()
    assert [r["agent_steps"] for r in read_log(tmp_path)] == [80]


def hold_lock_in_another_process(run_dir) -> subprocess.Popen:
    """A process that holds the run folder's lock (sleeping); returns once it does."""
    code = (
        "import sys, time\n"
        "from a3c_core.runs import lock_run_dir\n"
        "with lock_run_dir(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_locked_run_folder_refuses_a_second_holder_naming_the_first(tmp_path):
    holder = hold_lock_in_another_process(tmp_path)
    try:
        with pytest.raises(FileAccessError, match=f"pid {holder.pid}"):
            with lock_run_dir(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: no chance to clean up
        holder.wait(30)
    assert (tmp_path / LOCK).exists()  # left behind, but the OS released the flock
    with lock_run_dir(tmp_path):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()  # removed on the way out


def test_a_run_folder_that_cannot_be_created_is_one_line_naming_it(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FileAccessError, match="cannot write .*file/run") as caught:
        with lock_run_dir(tmp_path / "file" / "run"):
            pass
    assert "\n" not in str(caught.value)
    with pytest.raises(FileAccessError, match="no run folder"):
        with lock_run_dir(tmp_path / "missing", create=False):
            pass


@pytest.mark.parametrize(
    "where,expected",
    [
        ("file/eval.json", "Not a directory"),  # a path under a file
        ("missing/eval.json", "No such file or directory"),
        (".", "it is a folder"),
        ("/proc/eval.json", "cannot write /proc/eval.json"),  # read-only, even as root
    ],
)
def test_check_writable_refuses_what_cannot_be_written(tmp_path, where, expected):
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / where if not where.startswith("/") else where
    with pytest.raises(FileAccessError, match=expected):
        check_writable(path)
    check_writable(tmp_path / "eval.json")  # a good place passes, leaving nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_log_from_before_the_lr_column_reads_and_resumes(tmp_path):
    old = LOG_COLUMNS[:-1]  # log.csv as runs wrote it before the lr column
    rows = [["60.0", "800", "1", "20", "-21.000", "", "", "", "", "13.3"]] * 2
    (tmp_path / LOG).write_text("\n".join(",".join(r) for r in [old, *rows]) + "\n")
    assert [r["lr"] for r in read_log(tmp_path)] == [None, None]
    with open_log(tmp_path, keep_rows=1) as log:  # a resume of that run
        row = log_row(Progress(1600), [], 40, 1.0, 5e-4)
        log.write(",".join(map(str, row)) + "\n")
    first, second = read_log(tmp_path)
    assert (first["agent_steps"], first["lr"]) == (800, None)
    assert (second["agent_steps"], second["lr"]) == (1600, 5e-4)
