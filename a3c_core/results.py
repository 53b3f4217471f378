"""The results table, generated from pretrained/*/eval.json (introduction, chapter 6).

Scores are never typed by hand: `python -m a3c_core results --write-readme` rebuilds
the README's table from the evaluation files, and the book renders the same table.
"""

import json
import re
from pathlib import Path

from .runs import PRETRAINED

# baby-a3c's README: running mean of training episodes at 40M and 80M agent steps.
# (Its shipped log.txt files end lower at 80M for Breakout, 173.5, and Space
# Invaders, 490.1; chapter 6 plots those logs. The targets quote the README.)
SEED_SCORES = {
    "Breakout-v4": (140, 190),
    "Pong-v4": (18.2, 17.9),
    "SpaceInvaders-v4": (470, 550),
}
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def load_evals(root: Path = PRETRAINED) -> list[dict]:
    """Every pretrained/<game>/eval.json, in the seed's game order; where the folder
    also holds eval-greedy.json (the same evaluation with greedy actions), it comes
    along as the "greedy" entry."""
    evals = []
    for path in sorted(Path(root).glob("*/eval.json")):
        report = json.loads(path.read_text())
        greedy = path.with_name("eval-greedy.json")
        if greedy.exists():
            report["greedy"] = json.loads(greedy.read_text())
        evals.append(report)
    order = list(SEED_SCORES)
    return sorted(
        evals, key=lambda e: order.index(e["env_id"]) if e["env_id"] in order else 99
    )


def results_markdown(evals: list[dict]) -> str:
    """A markdown table: our evaluation next to the seed's published numbers.

    Book: chapter 6.
    """
    lines = [
        "| game | our score: mean ± std (episodes, policy) | min .. max "
        "| greedy: mean ± std | trained: agent steps, hours "
        "| seed's training running mean @ 40M / 80M steps |",
        "|---|---|---|---|---|---|",
    ]
    for e in evals:
        trained = e.get("trained", {})
        steps = (
            f"{trained['agent_steps'] / 1e6:.1f}M" if "agent_steps" in trained else "?"
        )
        hours = f"{trained['hours']:.1f} h" if "hours" in trained else "?"
        seed = SEED_SCORES.get(e["env_id"], ("-", "-"))
        g = e.get("greedy")
        greedy = f"{g['mean']:.1f} ± {g['std']:.1f} ({g['episodes']})" if g else "-"
        lines.append(
            f"| {e['env_id']} | {e['mean']:.1f} ± {e['std']:.1f} "
            f"({e['episodes']}, {e['policy']}) | {e['min']:g} .. {e['max']:g} "
            f"| {greedy} | {steps}, {hours} | {seed[0]} / {seed[1]} |"
        )
    return "\n".join(lines)


def update_readme(readme: Path, evals: list[dict]) -> bool:
    """Replace the table between the README's markers; True if the text changed."""
    text = readme.read_text()
    block = f"{README_START}\n{results_markdown(evals)}\n{README_END}"
    pattern = re.escape(README_START) + ".*?" + re.escape(README_END)
    if not re.search(pattern, text, flags=re.S):
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers")
    new = re.sub(pattern, lambda _: block, text, flags=re.S)
    readme.write_text(new)
    return new != text
