"""benchmarks/plateau_replay.py on curves made here, where the returns are known."""

import json

import numpy as np

from benchmarks import plateau_replay
from benchmarks.forks import as_columns, row_means


def curve(returns_per_row, lr_from=None, per_row=20, steps_per_row=50_000):
    """A learning_speed curve whose rows each end `per_row` episodes of the given
    return, the running mean kept as the trainer keeps it (m <- 0.99 m + 0.01 R);
    the learning rate drops from row `lr_from` on."""
    rows, mean = [], returns_per_row[0]
    for i, ret in enumerate(returns_per_row):
        for _ in range(per_row):
            mean = 0.99 * mean + 0.01 * ret
        lr = 1e-4 if lr_from is not None and i >= lr_from else 4e-4
        rows.append({"minutes": i + 1.0, "agent_steps": (i + 1) * steps_per_row,
                     "episodes": (i + 1) * per_row, "mean_return": round(mean, 3),
                     "lr": lr, "entropy": 1.5})  # fmt: skip
    return rows


RISE_THEN_FLAT = [-20.0 + 2 * min(i, 15) for i in range(40)]  # rises to 10 at row 15


def test_the_replay_recovers_each_rows_returns():
    rows = plateau_replay.replayable(curve(RISE_THEN_FLAT))
    got = [ret for _, ret in plateau_replay.episodes(rows, spread=0.0, seed=0)]
    assert len(got) == 20 * 39  # every row's episodes but the first row's
    assert max(abs(a - b) for a, b in zip(got[::20], RISE_THEN_FLAT[1:])) < 0.2


def test_noise_keeps_each_rows_mean():
    rows = plateau_replay.replayable(curve(RISE_THEN_FLAT))
    got = np.array([ret for _, ret in plateau_replay.episodes(rows, 3.0, seed=0)])
    by_row = got.reshape(39, 20)
    assert by_row.std(axis=1).min() > 1  # noise was added ...
    assert np.abs(by_row.mean(axis=1) - RISE_THEN_FLAT[1:]).max() < 0.2  # ... centred
    estimated = plateau_replay.first_cut(curve(RISE_THEN_FLAT), 100_000, 2, None, 0)
    assert estimated == plateau_replay.first_cut(
        curve(RISE_THEN_FLAT), 100_000, 2, 0, 0
    )


def test_the_spread_of_returns_is_estimated_through_a_steady_rise():
    rng, mean, rows = np.random.default_rng(1), -20.0, []
    for i in range(100):  # 30 episodes a row, std 3, rising 1.5 a row: a first
        # difference would read the rise as about twice the spread
        for ret in -20.0 + 1.5 * i + 3.0 * rng.normal(size=30):
            mean = 0.99 * mean + 0.01 * ret
        rows.append({"agent_steps": (i + 1) * 50_000, "episodes": (i + 1) * 30,
                     "mean_return": round(mean, 3)})  # fmt: skip
    own, scale, _ = row_means(as_columns(rows), -np.inf, np.inf)
    spread = plateau_replay.local_spread(own, scale)
    assert 2.2 < np.median(spread) < 3.8, np.median(spread)


def test_a_flat_top_is_cut_after_the_rise_and_later_with_more_patience():
    rows = curve(RISE_THEN_FLAT)
    cuts = [plateau_replay.first_cut(rows, 100_000, p, 0.0, 0) for p in (1, 2, 3)]
    minutes = [c["minutes"] for c in cuts]
    assert 16 <= minutes[0] < minutes[1] < minutes[2] <= 24, minutes
    assert all(c["mean_return"] > 5 for c in cuts)  # at the top, not in the rise


def test_a_steady_rise_is_never_cut():
    rows = curve([-20.0 + 0.5 * i for i in range(40)])
    assert plateau_replay.first_cut(rows, 100_000, 1, 0.0, 0) is None


def test_nothing_after_the_runs_own_cut_is_replayed():
    rows = curve(RISE_THEN_FLAT, lr_from=17)  # the run cut as the top began
    assert [r["minutes"] for r in plateau_replay.replayable(rows)][-1] == 17
    assert plateau_replay.first_cut(rows, 100_000, 3, 0.0, 0) is None


def test_the_command_prints_each_setting_and_refuses_an_unknown_result(
    monkeypatch, tmp_path, capsys
):
    result = {"name": "made", "minutes": 40.0, "curve": curve(RISE_THEN_FLAT)}
    (tmp_path / "made.json").write_text(json.dumps(result))
    monkeypatch.setattr(plateau_replay, "RESULTS", tmp_path)
    argv = ["made", "--windows", "100000", "--patience", "1", "3", "--spread", "0"]
    assert plateau_replay.main(argv + ["--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("made: replayable to minute 40 (of 40)")
    for line, patience in zip(lines[1:], (1, 3), strict=True):
        cut = plateau_replay.first_cut(result["curve"], 100_000, patience, 0.0, 0)
        want = plateau_replay.cut_text(cut)
        assert line == f"  window   100,000 x patience {patience}: {want}, {want}"
    assert plateau_replay.main(["nothing-here"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no result")
    result["curve"] = curve(RISE_THEN_FLAT, lr_from=4)  # a cut at minute 5
    (tmp_path / "made.json").write_text(json.dumps(result))
    assert plateau_replay.main(["made"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 4 log rows" in err
