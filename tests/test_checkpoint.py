import dataclasses
import errno
import io
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from a3c_core.checkpoint import (
    CheckpointError,
    atomic_save,
    load_agent_and_config,
    load_weights,
    save_checkpoint,
    training_state,
)
from a3c_core.config import A3CConfig
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from a3c_core.runs import CHANGES, CHECKPOINT, CONFIG, MODEL, FileAccessError, Progress
from a3c_core.train import prepare_run
from tests.conftest import ROOT, baby_a3c_checkpoint


def full_disk_midway(obj, f):
    f.write(b"half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_save_leaves_the_previous_file_intact_and_no_tmp(
    tmp_path, monkeypatch
):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", full_disk_midway)
    with pytest.raises(FileAccessError, match=f"cannot write {path} .No space left"):
        atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no model.pt.tmp


def test_a_full_disk_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    saved_run(tmp_path, A3CConfig(), agent_steps=100)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "replace", lambda *_: full_disk_midway(None, io.BytesIO()))
    with pytest.raises(FileAccessError, match=f"cannot write {tmp_path / CHECKPOINT}"):
        saved_run(tmp_path, A3CConfig(), agent_steps=200)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def malicious_files() -> dict[str, bytes]:
    """The same payload as a raw pickle (protocols 2 and 5) and as torch files."""
    files = {f"raw-protocol-{n}.pkl": pickle.dumps(RunsCode(), n) for n in (2, 5)}
    for name, options in (
        ("zip.pt", {}),
        ("zip-protocol-4.pt", {"pickle_protocol": 4}),
        ("legacy.pt", {"_use_new_zipfile_serialization": False}),
    ):
        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2), "x": RunsCode()}, buffer, **options)
        files[name] = buffer.getvalue()
    return files


@pytest.mark.parametrize("name", sorted(malicious_files()))
def test_a_file_with_code_is_refused_as_code_not_as_corrupt(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(malicious_files()[name])
    with pytest.raises(CheckpointError) as caught:
        load_weights(path)
    message = str(caught.value)
    assert "contains code (posix.system)" in message and "not loaded" in message
    assert "corrupt" not in message and "\n" not in message and "2.6" not in message


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
    model = ActorCritic(6, cfg.hidden_size)
    optimizer = SharedAdam(model.parameters(), lr=cfg.lr)
    progress = dataclasses.asdict(Progress(agent_steps=agent_steps))
    save_checkpoint(run_dir, training_state(model, optimizer, cfg, progress))


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


def test_an_agent_recorded_for_another_game_is_refused_unless_forced(tmp_path):
    saved_run(tmp_path, A3CConfig(env_id="SpaceInvaders-v4"), agent_steps=100)
    for path in (tmp_path, tmp_path / MODEL, tmp_path / CHECKPOINT):
        with pytest.raises(CheckpointError, match="for SpaceInvaders-v4, not Pong"):
            load_agent_and_config("Pong-v4", path)  # same action count: 6
        model, config = load_agent_and_config("Pong-v4", path, force=True)
        assert config.env_id == "SpaceInvaders-v4"
    with pytest.raises(CheckpointError, match="wrong game"):  # 4 actions: cannot
        load_agent_and_config("Breakout-v4", tmp_path, force=True)


# The fuzz test: damaged run folders, each given to the command line. Every one must
# end with one line on stderr and exit code 2, or load (a flipped bit in a weight is
# still a checkpoint). A small network (hidden 16) keeps the files and the test small.
FUZZ = A3CConfig(hidden_size=16)


def fuzz_state() -> dict:
    torch.manual_seed(0)
    model = ActorCritic(6, FUZZ.hidden_size)
    optimizer = SharedAdam(model.parameters(), lr=FUZZ.lr)
    progress = dataclasses.asdict(Progress(agent_steps=160, updates=1, log_rows=0))
    return training_state(model, optimizer, FUZZ, progress)


def saved_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def pickle_region(data: bytes) -> tuple[int, int]:
    """Where data.pkl, the pickle naming every tensor, sits in a torch zip file."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    return start, start + info.compress_size


def damaged(data: bytes, rng) -> list[bytes]:
    """40 truncations and 60 copies with 1-8 flipped bits: in the pickle, in the
    zip's own records (the last 2 kB: central directory) or anywhere."""
    cases = [data[: int(rng.integers(0, len(data)))] for _ in range(40)]
    start, end = pickle_region(data)
    for i in range(60):
        low, high = [(start, end), (len(data) - 2048, len(data)), (0, len(data))][i % 3]
        flipped = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            flipped[int(rng.integers(low, high))] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(flipped))
    return cases


def wrong_training_states(state: dict) -> list:
    """Valid torch files holding what no a3c_core run saves: every case is bad."""
    weights, adam = state["model"], state["optimizer"]
    first = next(iter(weights))

    def but(**parts):
        return {**state, **parts}

    cases = [[], None, 0, "checkpoint", torch.ones(3), {}]
    cases += [{k: v for k, v in state.items() if k != part} for part in state]
    cases += [but(**{part: bad}) for part in state for bad in (None, [1], "x")]
    cases += [
        but(model={}),
        but(model={**weights, first: "x"}),
        but(model={**weights, first: torch.zeros(3)}),
        but(model={**weights, 0: torch.zeros(3)}),
        but(model={k: v for k, v in weights.items() if k != first}),
        but(optimizer={}),
        but(optimizer={**adam, "state": []}),
        but(optimizer={**adam, "state": {}}),
        but(optimizer={**adam, "state": {**adam["state"], 0: None}}),
        but(optimizer={**adam, "state": {**adam["state"], 0: {"step": 1}}}),
        but(optimizer={**adam, "state": {0: {**adam["state"][0]}}}),
    ]
    for key, bad in (("step", "x"), ("exp_avg", torch.zeros(1)), ("exp_avg_sq", 1)):
        tensors = {**adam["state"][0], key: bad}
        cases.append(but(optimizer={**adam, "state": {**adam["state"], 0: tensors}}))
    config = state["config"]
    for bad in ({**config, "lr": "x"}, {**config, "lr": float("nan")}, {"nope": 1}):
        cases.append(but(config=bad))
    for bad in ({**config, "env_id": "Nope-v4"}, {**config, "hidden_size": 32}):
        cases.append(but(config=bad))
    cases += [but(config={1: 2}), but(config={})]  # {}: defaults, hidden 256
    progress = state["progress"]
    for key, bad in (
        ("agent_steps", "x"),
        ("agent_steps", -1),
        ("updates", 1.5),
        ("elapsed_s", float("nan")),
        ("mean_return", "a"),
        ("log_rows", True),
    ):
        cases.append(but(progress={**progress, key: bad}))
    return cases


def wrong_weights(weights: dict) -> list:
    head, memory = "actor_linear.weight", "gru.weight_hh"
    return [
        [],
        {},
        {**weights, head: "x"},
        {**weights, head: torch.zeros(6)},
        {**weights, head: torch.zeros(5, 16)},  # 5 actions: another game
        {**weights, memory: torch.zeros(48)},
        {**weights, "extra": torch.zeros(1)},
        {k: v for k, v in weights.items() if k != memory},
    ]


BAD_CONFIG_JSON = [
    b"",
    b"{",
    b"[]",
    b'"Pong-v4"',
    b"\xff\xfe\x00",
    b'{"lr": "x"}',
    b'{"lr": NaN}',
    b'{"nope": 1}',
    b'{"env_id": 5}',
    b'{"max_episode_steps": -1}',
    b'{"env_id": "Breakout-v4"}',
    b"[" * 100_000,
]


def fuzz_cases() -> list[tuple[str, str, dict, bool]]:
    """(label, command, files, surely bad): `resume` runs `train --resume`,
    `evaluate` runs `evaluate --checkpoint` on the file named first."""
    import numpy as np

    rng = np.random.default_rng(21)
    state = fuzz_state()
    checkpoint, model = saved_bytes(state), saved_bytes(state["model"])
    config = json.dumps(state["config"]).encode()
    cases = []
    for i, data in enumerate(damaged(checkpoint, rng)):
        cases.append((f"checkpoint {i}", "resume", {CHECKPOINT: data}, i < 40))
    for i, data in enumerate(damaged(model, rng)):
        files = {MODEL: data, CONFIG: config}
        cases.append((f"model {i}", "evaluate", files, i < 40))
    for i, bad in enumerate(wrong_training_states(state)):
        cases.append((f"state {i}", "resume", {CHECKPOINT: saved_bytes(bad)}, True))
    for i, bad in enumerate(wrong_weights(state["model"])):
        files = {MODEL: saved_bytes(bad), CONFIG: config}
        cases.append((f"weights {i}", "evaluate", files, True))
    for i, bad in enumerate(BAD_CONFIG_JSON):
        cases.append((f"config {i}", "evaluate", {MODEL: model, CONFIG: bad}, True))
    return cases


def test_every_damaged_checkpoint_is_one_line_and_exit_code_2(
    tmp_path, monkeypatch, capsys
):
    from a3c_core import cli
    from a3c_core.train import Trainer

    # what comes after loading is not under test: no workers, no episodes
    monkeypatch.setattr(Trainer, "run", lambda self, log, show: self.progress)
    monkeypatch.setattr(cli, "evaluate_parallel", lambda *a, **k: [(0.0, 1)])
    cases, refused = fuzz_cases(), 0
    assert len(cases) > 250
    for label, command, files, surely_bad in cases:
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if command == "resume":
            argv = ["train", "--resume", str(folder), "--no-progress"]
        else:
            argv = ["evaluate", "--checkpoint", str(folder / next(iter(files)))]
        code = cli.main(argv + (["--episodes", "1"] if command == "evaluate" else []))
        err = capsys.readouterr().err
        if code == 0 and not surely_bad:
            assert err == "", label
            continue
        assert code == 2, f"{label}: exit code {code}\n{err}"
        assert err.startswith("error: ") and err.count("\n") == 1, f"{label}: {err}"
        refused += 1
    assert refused > len(cases) / 2  # most damage is caught, not just shrugged off


def test_damaged_files_from_the_shell_are_one_line_and_exit_code_2(tmp_path):
    state = fuzz_state()
    (tmp_path / CHECKPOINT).write_bytes(saved_bytes(state)[:5000])
    (tmp_path / MODEL).write_bytes(saved_bytes(state["model"]))
    (tmp_path / CONFIG).write_bytes(b"{not json")
    for argv in (
        ["train", "--resume", str(tmp_path)],
        ["evaluate", "--checkpoint", str(tmp_path / MODEL)],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "a3c_core", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
        assert str(tmp_path) in run.stderr
