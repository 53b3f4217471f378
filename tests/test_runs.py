import dataclasses
import json

from a3c_core.config import A3CConfig
from a3c_core.runs import (
    CONFIG,
    LOG_COLUMNS,
    PRETRAINED,
    Progress,
    changed_at,
    config_at,
    game_dir,
    log_row,
    open_log,
    read_log,
    record_config_changes,
    training_info,
)
from a3c_core.worker import UpdateDone


def test_read_log_gives_ints_floats_and_none_for_empty_cells(tmp_path):
    updates = [UpdateDone(8.0, 4.0, 2.0, 16.0), UpdateDone(4.0, 2.0, 1.0, 8.0)]
    with open_log(tmp_path, keep_rows=0) as log:
        log.write(",".join(map(str, log_row(Progress(), [], 40, 0.0))) + "\n")
        p = Progress(agent_steps=80, episodes=2, updates=2, elapsed_s=61.25)
        p.mean_return = -20.5
        log.write(",".join(map(str, log_row(p, updates, 40, 12.34))) + "\n")
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


def test_game_dir_names_the_run_folder_of_v4_and_v5_ids():
    assert game_dir("Pong-v4") == "pong-v4" and game_dir("ALE/Pong-v5") == "ale-pong-v5"
    for config in PRETRAINED.glob(f"*/{CONFIG}"):
        assert config.parent.name == game_dir(json.loads(config.read_text())["env_id"])
