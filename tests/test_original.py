"""original_file: the override, the shipped copies, the cache, a checked download (the
network is never used: urlopen is replaced)."""

import hashlib
import io
from pathlib import Path

import pytest

from a3c_core import original
from a3c_core.original import (
    ENV_VAR,
    SHA256,
    SHIPPED,
    OriginalFileError,
    original_file,
    original_url,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "baby-a3c"


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty cache in tmp_path, no override, and a urlopen that records its calls
    and serves what `served` holds (bytes, or an exception to raise)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls, served = [], {}

    def fake_urlopen(url, timeout):
        calls.append(url)
        if isinstance(served.get("body"), Exception):
            raise served["body"]
        return io.BytesIO(served.get("body", b""))

    monkeypatch.setattr(original, "urlopen", fake_urlopen)
    return calls, served


def pretend(key: str, body: bytes, monkeypatch):
    """Make `body` the pinned sha256 of `key`, so tests need no real checkpoint."""
    monkeypatch.setitem(SHA256, key, hashlib.sha256(body).hexdigest())


def test_the_shipped_logs_and_80m_checkpoints_are_the_seeds_files(no_network):
    calls, _ = no_network
    for key in [
        f"{game}/{name}"
        for game in ("pong-v4", "breakout-v4", "spaceinvaders-v4")
        for name in ("log.txt", "model.80.tar")
    ]:
        game, name = key.split("/")
        assert original_file(game, name) == SHIPPED / key  # checked, no download
    assert original_file("Pong-v4", "log.txt") == SHIPPED / "pong-v4" / "log.txt"
    assert calls == []


def test_the_override_folder_is_used_and_nothing_else(
    no_network, tmp_path, monkeypatch
):
    calls, _ = no_network
    folder = tmp_path / "copy"
    (folder / "pong-v4").mkdir(parents=True)
    log = (SHIPPED / "pong-v4" / "log.txt").read_bytes()
    (folder / "pong-v4" / "log.txt").write_bytes(log)
    monkeypatch.setenv(ENV_VAR, str(folder))
    assert original_file("pong-v4", "log.txt") == folder / "pong-v4" / "log.txt"
    # not in the chosen folder: an error naming it, no shipped copy, no download
    with pytest.raises(OriginalFileError, match=f"not in {folder}"):
        original_file("breakout-v4", "log.txt")
    assert calls == []


def test_a_download_is_checked_then_cached_and_not_repeated(no_network, monkeypatch):
    calls, served = no_network
    body = b"a stand-in for model.40.tar"
    pretend("pong-v4/model.40.tar", body, monkeypatch)
    served["body"] = body
    path = original_file("pong-v4", "model.40.tar")
    assert path == original.cache_dir() / "pong-v4" / "model.40.tar"
    assert path.read_bytes() == body
    assert calls == [original_url("pong-v4", "model.40.tar")]
    assert "7f9734b96f5f89c27ddf87a642886d9a90883a35/pong-v4/model.40.tar" in calls[0]
    assert original_file("pong-v4", "model.40.tar") == path  # from the cache
    assert len(calls) == 1
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(no_network):
    _, served = no_network
    served["body"] = b"not the seed's checkpoint"
    with pytest.raises(OriginalFileError, match="wrong sha256: refused"):
        original_file("breakout-v4", "model.40.tar")
    folder = original.cache_dir() / "breakout-v4"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_local_copy_with_the_wrong_checksum_is_refused(
    no_network, tmp_path, monkeypatch
):
    folder = tmp_path / "copy"
    (folder / "pong-v4").mkdir(parents=True)
    (folder / "pong-v4" / "log.txt").write_text("edited\n")
    monkeypatch.setenv(ENV_VAR, str(folder))
    with pytest.raises(OriginalFileError, match="sha256 differs"):
        original_file("pong-v4", "log.txt")


def test_a_file_that_cannot_be_had_says_in_one_line_how_to_get_it(no_network):
    calls, served = no_network
    served["body"] = OSError("Name or service not known")
    with pytest.raises(OriginalFileError) as caught:
        original_file("spaceinvaders-v4", "model.40.tar")
    message = str(caught.value)
    assert "\n" not in message
    assert ENV_VAR in message and original_url("spaceinvaders-v4", "model.40.tar") in (
        message
    )
    assert "Name or service not known" in message
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(OriginalFileError, match="is not here: set"):
        original_file("spaceinvaders-v4", "model.40.tar", download=False)
    assert len(calls) == 1


def test_unknown_files_are_refused_before_any_lookup(no_network):
    with pytest.raises(OriginalFileError, match="baby-a3c has no pong-v4/model.60"):
        original_file("pong-v4", "model.60.tar")
    with pytest.raises(OriginalFileError, match="has no seaquest-v4/log.txt"):
        original_file("seaquest-v4", "log.txt")


@pytest.mark.skipif(not SHARED.exists(), reason=f"no copy of baby-a3c at {SHARED}")
def test_the_pinned_checksums_are_those_of_the_seeds_files():
    for key, digest in SHA256.items():
        assert original.sha256(SHARED / key) == digest, key


def test_the_seeds_logs_parse_into_rows_like_ours(no_network):
    text = (SHIPPED / "pong-v4" / "log.txt").read_text()
    rows = original.read_original_log("pong-v4")
    assert len(rows) == text.count("\ntime ") + text.startswith("time ") == 972
    assert rows[0] == {
        "elapsed_s": 60,
        "episodes": 35,
        "agent_steps": 100_000,
        "mean_return": -20.80,
    }  # time 00h 01m 00s, episodes 35, frames 0.1M, mean epr -20.80
    assert rows[-1]["elapsed_s"] == 16 * 3600 + 13 * 60 + 1
    assert (rows[-1]["agent_steps"], rows[-1]["mean_return"]) == (80_000_000, 17.89)
    for game in ("breakout-v4", "spaceinvaders-v4"):
        rows = original.read_original_log(game)
        assert len(rows) > 1000 and rows[-1]["agent_steps"] == 80_000_000
