import dataclasses
import json

import pytest
import torch

from a3c_core.checkpoint import (
    CheckpointError,
    atomic_save,
    load_weights,
    save_checkpoint,
)
from a3c_core.config import A3CConfig
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from a3c_core.runs import CHANGES, Progress
from a3c_core.train import prepare_run
from tests.conftest import baby_a3c_checkpoint


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(3)}, path)

    def crash_midway(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(3))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04broken"])
def test_corrupt_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(path)


def test_a_text_file_error_names_the_reason_not_torchs_weights_only_preamble(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# not weights\n")
    with pytest.raises(CheckpointError) as caught:
        load_weights(path)
    message = str(caught.value)
    assert "\n" not in message and "PyTorch 2.6" not in message
    assert "Unsupported operand" in message and "corrupt" in message


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save(ActorCritic(6).state_dict(), path)
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(path)


def test_missing_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_weights(tmp_path / "nothing.pt")


def test_original_tar_files_load_as_state_dicts_without_config():
    weights, config = load_weights(baby_a3c_checkpoint("breakout-v4", 40))
    assert config is None and weights["actor_linear.weight"].shape == (4, 256)


def saved_run(run_dir, cfg: A3CConfig, agent_steps: int) -> None:
    model = ActorCritic(6)
    optimizer = SharedAdam(model.parameters(), lr=cfg.lr)
    progress = dataclasses.asdict(Progress(agent_steps=agent_steps))
    save_checkpoint(run_dir, model, optimizer, cfg, progress)


def test_a_resume_that_changes_a_flag_records_old_new_and_the_agent_step(tmp_path):
    saved_run(tmp_path, A3CConfig(lr=5e-4), agent_steps=16_000)
    prepare_run(A3CConfig(lr=1.25e-4, log_every=30.0), tmp_path, resume=True)
    prepare_run(A3CConfig(lr=1.25e-4, log_every=30.0), tmp_path, resume=True)  # again
    lines = (tmp_path / CHANGES).read_text().splitlines()
    assert len(lines) == 1  # the same resume twice, no checkpoint between: one change
    record = json.loads(lines[0])
    assert record["agent_steps"] == 16_000
    assert record["changed"] == {"lr": [5e-4, 1.25e-4], "log_every": [60.0, 30.0]}


def test_a_resume_with_the_saved_config_records_nothing(tmp_path):
    saved_run(tmp_path, A3CConfig(), agent_steps=500)
    prepare_run(A3CConfig(), tmp_path, resume=True)
    assert not (tmp_path / CHANGES).exists()
