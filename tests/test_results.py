import json

import pytest

from a3c_core.results import (
    README_END,
    README_START,
    load_evals,
    results_markdown,
    update_readme,
)
from tests.conftest import ROOT


def test_readme_table_is_the_one_generated_from_eval_files():
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(README_START), readme.index(README_END)
    table = readme[start + len(README_START) : end].strip()
    assert table == results_markdown(load_evals()), (
        "README results are stale: run python -m a3c_core results --write-readme"
    )


def test_table_rows_come_from_eval_json(tmp_path):
    game = tmp_path / "pong-v4"
    game.mkdir()
    report = {"env_id": "Pong-v4", "mean": 19.5, "std": 1.25, "min": 17, "max": 21,
              "episodes": 30, "policy": "sampled",
              "trained": {"agent_steps": 9_800_000, "hours": 4.6}}  # fmt: skip
    (game / "eval.json").write_text(json.dumps(report))
    table = results_markdown(load_evals(tmp_path))
    assert (
        "| Pong-v4 | 19.5 ± 1.2 (30, sampled) | 17 .. 21 | - | 9.8M, 4.6 h "
        "| 18.2 / 17.9 |" in table
    )


def test_greedy_evaluation_beside_eval_json_gets_its_own_column(tmp_path):
    game = tmp_path / "pong-v4"
    game.mkdir()
    common = {"env_id": "Pong-v4", "min": 10, "max": 21, "episodes": 30,
              "trained": {"agent_steps": 20_000_000, "hours": 10.0}}  # fmt: skip
    sampled = {**common, "mean": 14.25, "std": 2.0, "policy": "sampled"}
    greedy = {**common, "mean": 18.5, "std": 1.5, "episodes": 10, "policy": "greedy"}
    (game / "eval.json").write_text(json.dumps(sampled))
    (game / "eval-greedy.json").write_text(json.dumps(greedy))
    (evaluation,) = load_evals(tmp_path)
    assert evaluation["mean"] == 14.25 and evaluation["greedy"]["mean"] == 18.5
    row = results_markdown([evaluation]).splitlines()[-1]
    assert row.startswith("| Pong-v4 | 14.2 ± 2.0 (30, sampled) | 10 .. 21 ")
    assert "| 18.5 ± 1.5 (10) |" in row


def test_update_readme_needs_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, [])
    readme.write_text(f"a\n{README_START}\nold\n{README_END}\nb")
    assert update_readme(readme, []) and "old" not in readme.read_text()
