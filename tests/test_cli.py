import subprocess
import sys

import pytest
import torch

from a3c_core.cli import build_parser, main
from tests.conftest import ROOT, baby_a3c_checkpoint


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--env", "Pongg-v4"], "did you mean"),
        (["train", "--num-workers", "0"], "num_workers must be in 1..1024"),
        (["train", "--lr", "0"], "lr must be in (0, 1]"),
        (["train", "--gamma", "2"], "gamma"),
        (["train", "--resume", "no/such/run"], "no run folder"),
        (["play", "--env", "Pong-v4", "--checkpoint", "missing.pt"], "no checkpoint"),
        (["evaluate", "--env", "Breakout"], "unknown Atari game"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["evaluate", "--episodes", "0"], "expected a whole number >= 1, got '0'"),
        (["evaluate", "--processes", "two"], "expected a whole number >= 1"),
        (["train", "--lr", "abc"], "invalid float value: 'abc'"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_malformed_flags_are_one_line_and_exit_code_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert expected in one_line_error(capsys)


def test_corrupt_and_other_game_checkpoints(tmp_path, capsys):
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"garbage")
    assert main(["play", "--env", "Pong-v4", "--checkpoint", str(corrupt)]) == 2
    assert "corrupt" in one_line_error(capsys)
    other = str(baby_a3c_checkpoint("breakout-v4"))
    assert main(["play", "--env", "Pong-v4", "--checkpoint", other]) == 2
    assert "wrong game" in one_line_error(capsys)


def test_flags_are_real_flags_not_truthy_strings():
    # baby-a3c's argparse(type=bool) made `--test False` true
    args = build_parser().parse_args(["play"])
    assert args.greedy is False and args.render is False
    assert build_parser().parse_args(["play", "--greedy"]).greedy is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["play", "--greedy", "False"])


def test_config_flags_cover_every_field_and_are_only_set_when_given():
    args = build_parser().parse_args(
        ["train", "--lr", "3e-4", "--envs-per-worker", "4"]
    )
    assert args.lr == 3e-4 and args.envs_per_worker == 4
    assert not hasattr(args, "gamma")  # unset flags do not override a resumed config


def test_python_dash_m_exit_code_and_message():
    run = subprocess.run(
        [sys.executable, "-m", "a3c_core", "train", "--env", "Nope-v4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: unknown Atari game id 'Nope-v4'")


def test_a_train_run_refuses_to_overwrite_an_existing_run(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(torch.zeros(1).numpy().tobytes())
    assert main(["train", "--run-dir", str(tmp_path)]) == 2
    assert "--resume" in one_line_error(capsys)


def test_a_train_run_refuses_a_folder_holding_a_model_without_checkpoint(
    tmp_path, capsys
):
    (tmp_path / "model.pt").write_bytes(b"someone's model")
    assert main(["train", "--run-dir", str(tmp_path)]) == 2
    assert "holds a model.pt" in one_line_error(capsys)
    assert (tmp_path / "model.pt").read_bytes() == b"someone's model"


def never_play(*args, **kwargs):
    raise AssertionError("played before checking that the output can be written")


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--out", "{file}/eval.json"],
        ["play", "--gif", "{file}/play.gif"],
        ["train", "--run-dir", "{file}/run"],
    ],
)
def test_an_output_that_cannot_be_written_fails_at_once(
    argv, tmp_path, monkeypatch, capsys
):
    import a3c_core.cli

    monkeypatch.setattr(a3c_core.cli, "evaluate_parallel", never_play)
    monkeypatch.setattr(a3c_core.cli, "play_episode", never_play)
    monkeypatch.setattr(a3c_core.train.Trainer, "start_workers", never_play)
    (tmp_path / "file").write_text("a file, not a folder")
    argv = [arg.replace("{file}", str(tmp_path / "file")) for arg in argv]
    assert main(argv) == 2
    assert f"cannot write {tmp_path / 'file'}/" in one_line_error(capsys)


def test_force_plays_an_agent_recorded_for_another_game(tmp_path, monkeypatch):
    import a3c_core.cli
    from a3c_core.config import A3CConfig
    from a3c_core.network import ActorCritic

    torch.save(ActorCritic(6).state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(A3CConfig(env_id="Pong-v4").to_json())
    monkeypatch.setattr(a3c_core.cli, "evaluate_parallel", lambda *a, **k: [(1, 2)])
    argv = ["evaluate", "--env", "SpaceInvaders-v4", "--checkpoint", str(tmp_path)]
    assert main(argv) == 2
    assert main(argv + ["--force"]) == 0
