"""The original baby-a3c files: its training logs and trained checkpoints (chapter 6).

Sam Greydanus's baby-a3c shipped, for each of its three games, its training log
(`log.txt`) and two checkpoints (`model.40.tar`, `model.80.tar`, after 40M and 80M
agent steps). The book compares with them: chapter 1 and chapter 3 read the logs,
chapter 2 loads the Pong agent, chapter 6 plays and evaluates the agents. They are
Apache-2.0 (`book/data/baby-a3c/LICENSE`, and `NOTICE` at the repository root).

`original_file(game, name)` returns a local path to one of them, from the first of:

1. `$A3C_ORIGINAL_DIR/<game>/<name>`, if that variable is set (a folder laid out
   like baby-a3c's repository: CI points it at a full copy);
2. the copy in this repository, `book/data/baby-a3c/<game>/<name>`: the three logs
   and the three 80M checkpoints, what the chapters need;
3. the local cache, `~/.cache/a3c_core/baby-a3c/<game>/<name>` (or under
   `$XDG_CACHE_HOME`);
4. a download from baby-a3c's pinned commit on GitHub into the cache.

Every file, wherever it is found, must have the sha256 that the pinned commit's file
has, so a chapter always reads exactly the seed's bytes. `read_original_log` parses a
log; `a3c_core.play.load_agent` loads the checkpoints.
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.request import urlopen

REPOSITORY = "greydanus/baby-a3c"
COMMIT = "7f9734b96f5f89c27ddf87a642886d9a90883a35"  # "Add license", 2021-07-30
ENV_VAR = "A3C_ORIGINAL_DIR"
SHIPPED = Path(__file__).resolve().parent.parent / "book" / "data" / "baby-a3c"

# sha256 of every file of the pinned commit that original_file serves.
SHA256 = {
    "breakout-v4/log.txt": (
        "7cb845b2d0cd0c8e6f26a56f45b2a94963c4ed5eb95f8675783c01d6ff5e345c"
    ),
    "breakout-v4/model.40.tar": (
        "e82d5bc0d87d8e0da3772549b75efa6d486e7b47b8f7a914f0eabfb9441159b0"
    ),
    "breakout-v4/model.80.tar": (
        "af6c793df878de5021e95af93028e11107b9840b7c92d81f770574af32f4df77"
    ),
    "pong-v4/log.txt": (
        "c6c16e2b5f4a489eccb7580a5eb83eb343dd47f8a34989ee9f7d0da0c4574d60"
    ),
    "pong-v4/model.40.tar": (
        "7d9f2bfece0c1a16734bb42f920db65a09362cb53403985f927a9b1b2096a495"
    ),
    "pong-v4/model.80.tar": (
        "070942837671289755da61918afa47eef4cc24c60bc18e6cf03cfc07e4255bbd"
    ),
    "spaceinvaders-v4/log.txt": (
        "61c0923ab17ebffb9c3ca9e9446d2d72c8c8f5c4747056e7668d4137f3a1f8db"
    ),
    "spaceinvaders-v4/model.40.tar": (
        "01bd5946f34f51a9c8e285f89262c7d5cb53c29c373afec1fc4645750a3f7ea8"
    ),
    "spaceinvaders-v4/model.80.tar": (
        "72ec71ee5aaf555ee5ed25ec54e2d3778393a47e7164d3211fee55dd4a7de33b"
    ),
}
DOWNLOAD_TIMEOUT_S = 60


class OriginalFileError(FileNotFoundError):
    """An original baby-a3c file that cannot be had; its one-line message says how
    to get it."""


def original_url(game: str, name: str) -> str:
    """The file's raw URL at the pinned commit, e.g. for ("pong-v4", "log.txt")."""
    return f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/{game}/{name}"


def cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/a3c_core/baby-a3c, by default
    ~/.cache/a3c_core/baby-a3c."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "a3c_core" / "baby-a3c"


def sha256(path: Path) -> str:
    """The file's sha256, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def original_file(game: str, name: str, download: bool = True) -> Path:
    """A checked local path to baby-a3c's `<game>/<name>`, e.g. ("pong-v4",
    "model.80.tar"); game may also be a game id ("Pong-v4"). Downloads into the
    cache if no local copy exists (unless `download` is False).

    Raises OriginalFileError (one line: how to get the file) if it cannot be had,
    and if a copy's sha256 is not the pinned commit's."""
    game = game.lower()
    key = f"{game}/{name}"
    if key not in SHA256:
        raise OriginalFileError(
            f"baby-a3c has no {key}: games {sorted({k.split('/')[0] for k in SHA256})}"
            ", files log.txt, model.40.tar, model.80.tar"
        )
    url = original_url(game, name)
    how = (
        f"set {ENV_VAR} to a folder holding {key}, or save {url} as {cache_dir() / key}"
    )
    override = os.environ.get(ENV_VAR)
    if override:
        places = [Path(override) / key]  # a chosen folder: no other place, no download
    else:
        places = [SHIPPED / key, cache_dir() / key]
    for path in places:
        if path.is_file():
            return checked(path, key)
    if override:
        raise OriginalFileError(f"baby-a3c's {key} is not in {override}: {how}")
    if not download:
        raise OriginalFileError(f"baby-a3c's {key} is not here: {how}")
    try:
        return fetch(game, name, cache_dir() / key)
    except OriginalFileError:
        raise
    except OSError as error:  # no network, HTTP error, read-only cache
        reason = " ".join(str(error).split())  # one line
        raise OriginalFileError(
            f"baby-a3c's {key} is not here and its download failed ({reason}): {how}"
        ) from error


def checked(path: Path, key: str) -> Path:
    """`path` if its sha256 is the pinned commit's for `key`; else OriginalFileError."""
    if sha256(path) != SHA256[key]:
        raise OriginalFileError(
            f"{path} is not baby-a3c's {key} at commit {COMMIT[:7]} (sha256 differs):"
            f" delete it, or point {ENV_VAR} at the original files"
        )
    return path


def fetch(game: str, name: str, dest: Path) -> Path:
    """Download the file to `dest`, atomically: written to a temporary file beside it,
    checked, then renamed, so `dest` is either absent or the whole, right file."""
    key = f"{game}/{name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        url = original_url(game, name)
        with (
            os.fdopen(fd, "wb") as out,
            urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != SHA256[key]:
            raise OriginalFileError(
                f"the download of baby-a3c's {key} has the wrong sha256: refused"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


LOG_LINE = re.compile(
    r"time (\d+)h (\d+)m (\d+)s, episodes (\d+), frames ([\d.]+)M, mean epr ([-\d.]+)"
)


def read_original_log(game: str) -> list[dict]:
    """baby-a3c's log.txt of `game` ("pong-v4"), one dict per line, in the keys of
    our own log (`a3c_core.runs.read_log`): elapsed_s, episodes, agent_steps and
    mean_return. Its lines read `time 16h 13m 01s, episodes 30438, frames 80.0M, mean
    epr 17.89, run loss -50.58`: its "frames" are agent steps, logged to 0.1M, and
    "mean epr" is the running mean of training episodes. Rows come in file order;
    Breakout's first 52 lines alternate between two runs started a minute apart."""
    text = original_file(game, "log.txt").read_text()
    return [
        {
            "elapsed_s": 3600 * int(h) + 60 * int(m) + int(s),
            "episodes": int(episodes),
            "agent_steps": round(float(millions) * 1e6),
            "mean_return": float(mean),
        }
        for h, m, s, episodes, millions, mean in LOG_LINE.findall(text)
    ]
