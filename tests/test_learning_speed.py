"""benchmarks/learning_speed.py on a tiny real run: train to a budget, resume to a
larger one, evaluate, summarise, tabulate and plot (its numbers are not tested)."""

import json
import math

import pytest

from a3c_core.network import cpu_description
from benchmarks import learning_speed

from synthetic_logs import curve_of, running_log

TINY = ["num_workers=1", "envs_per_worker=2", "rollout_len=5", "log_every=1"]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """The script, writing its runs and results under tmp_path."""
    monkeypatch.setattr(learning_speed, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(learning_speed, "RESULTS", tmp_path / "results")
    return learning_speed


def run_tiny(bench, minutes: float) -> dict:
    sets = [arg for item in TINY for arg in ("--set", item)]
    bench.main(["run", "tiny", "--minutes", str(minutes), "--episodes", "1", *sets])
    return json.loads((bench.RESULTS / "tiny.json").read_text())


def test_a_run_trains_to_its_budget_resumes_to_a_larger_one_and_is_reported(
    bench, monkeypatch
):
    first = run_tiny(bench, 0.3)
    assert first["curve"] and first["agent_steps"] > 0 and first["minutes"] >= 0.3
    assert {row["lr"] for row in first["curve"]} == {first["config"]["lr"]}
    entropies = [row["entropy"] for row in first["curve"] if row["entropy"] is not None]
    assert entropies and all(0 < e <= math.log(6) for e in entropies)  # Pong: 6 actions
    assert first["config"]["rollout_len"] == 5 and first["eval"]["episodes"] == 1
    assert -21 <= first["eval"]["mean"] <= 21 and first["cpu"]

    assert first["cpus"] == [{"from_minute": 0.0, "cpu": cpu_description()}]

    other = "Other(R) CPU Processor, torch kernels: AVX512, native bfloat16"
    monkeypatch.setattr(bench, "cpu_description", lambda: other)
    second = run_tiny(bench, 0.5)  # resumed on another machine
    assert second["minutes"] >= 0.5 and second["agent_steps"] > first["agent_steps"]
    moved = second["cpus"][1]
    assert second["cpus"][0] == first["cpus"][0] and len(second["cpus"]) == 2
    assert moved["cpu"] == other
    assert first["minutes"] - 0.1 <= moved["from_minute"] <= first["minutes"] + 0.1
    assert second["cpu"].endswith(f" then {other}")
    steps = [row["agent_steps"] for row in second["curve"]]
    assert steps == sorted(steps) and len(steps) > len(first["curve"])

    results = bench.load_results()
    assert " then Other CPU (AVX-512) | all |" in bench.report_table(results)
    assert bench.report_table(results).count("| tiny | Pong-v4 |") == 1
    readme = bench.RESULTS / "README.md"
    readme.write_text(f"# Results\n{bench.TABLE_START}\nold\n{bench.TABLE_END}\nend\n")
    bench.write_table(readme, bench.report_table(results))
    text = readme.read_text()
    assert "old" not in text and "| tiny |" in text and text.endswith("end\n")
    bench.plot(results, bench.RESULTS / "plot.png")
    assert (bench.RESULTS / "plot.png").stat().st_size > 1000


def test_a_branch_copies_its_parent_and_trains_on_from_its_checkpoint(bench):
    parent = run_tiny(bench, 0.2)
    sets = [arg for item in TINY for arg in ("--set", item)]
    args = ["--minutes", "0.4", "--episodes", "1", "--from", "tiny"]
    bench.main(["run", "branch", *args, *sets, "--set", "lr=1e-4"])
    result = json.loads((bench.RESULTS / "branch.json").read_text())
    start = result["branched_from"]
    assert start["name"] == "tiny" and start["minutes"] >= 0.2
    assert start["agent_steps"] >= parent["agent_steps"]
    assert result["curve"][: len(parent["curve"])] == parent["curve"]
    assert result["agent_steps"] > start["agent_steps"] and result["minutes"] >= 0.4
    assert result["config"]["lr"] == 1e-4 and parent["config"]["lr"] != 1e-4
    assert "--from tiny" in result["command"] and parent["branched_from"] is None
    assert result["cpus"] == parent["cpus"]  # the parent's machine, then the same
    assert not (bench.RUNS / "branch.copying").exists()
    with pytest.raises(SystemExit, match="no checkpoint to branch from"):
        bench.main(["run", "orphan", *args[:-1], "missing", *sets])


def test_the_running_mean_is_read_at_a_time_and_first_reaching_a_score(bench):
    curve = [
        {"minutes": 1.0, "agent_steps": 100, "mean_return": None},
        {"minutes": 2.0, "agent_steps": 200, "mean_return": -20.0},
        {"minutes": 3.0, "agent_steps": 300, "mean_return": 5.0},
    ]
    assert bench.value_at(curve, "minutes", 1.5) is None
    assert bench.value_at(curve, "minutes", 2.9) == -20.0
    assert bench.first_reaching(curve, "agent_steps", 0.0) == 300
    assert bench.first_reaching(curve, "minutes", 10.0) is None


def test_a_run_is_described_at_marks_it_reached_and_not_past_its_end(bench):
    curve = [
        {"minutes": 30.0, "agent_steps": 1e6, "mean_return": -12.0},
        {"minutes": 60.0, "agent_steps": 2.5e6, "mean_return": 1.0},
        {"minutes": 70.0, "agent_steps": 3e6, "mean_return": 4.0},
    ]
    run = {"name": "a", "curve": curve, "agent_steps": 3e6, "cpu": "AMD EPYC, AMX",
           "config": {"conv_dtype": "auto"},
           "eval": {"mean": 3.5, "std": 2.0, "episodes": 30}}  # fmt: skip
    per_step, line = bench.describe(run, marks=(1, 2, 3, 4), minutes=(60, 120))
    assert per_step == [-12.0, -12.0, 4.0, None]
    assert line == (
        "a (auto, AMD EPYC): 3.00M agent steps; running mean at 1M -12.0, "
        "2M -12.0, 3M 4.0; at 60 min 1.0; evaluation 3.5 +- 2.0 (30 episodes)"
    )


def test_a_pair_is_summed_up_by_its_step_ratio_and_evaluation_gap(bench):
    def result(steps, name, mean):
        return {"agent_steps": steps, "name": name,
                "eval": {"mean": mean, "std": 3.0, "episodes": 9}}  # fmt: skip

    ratio, gap, line = bench.pair_line(result(4e6, "pong-default", 10.0),
                                       result(5e6, "pong-bf16", 13.0))  # fmt: skip
    assert (ratio, round(gap, 6)) == (1.25, round(3.0 / (2**0.5), 6))
    assert line == "agent steps, pong-bf16 / pong-default: 1.25; evaluation gap +2.1 SE"


def two_hours(first_hour: float, second_hour: float, minutes: int) -> list[dict]:
    """A curve of one row a minute, two episodes each, returning first_hour in
    the first hour and second_hour after."""
    returns = [first_hour] * 120 + [second_hour] * 2 * (minutes - 60)
    return curve_of(running_log(returns, per_row=2, start=first_hour))


def test_a_pair_is_described_side_by_side_with_its_hours_it_reached(bench):
    def result(name, curve, mean):
        return {"name": name, "curve": curve, "agent_steps": curve[-1]["agent_steps"],
                "cpu": "AMD EPYC", "config": {"conv_dtype": "float32"},
                "eval": {"mean": mean, "std": 3.0, "episodes": 9}}  # fmt: skip

    old = result("old", two_hours(-20.0, 10.0, 120), 10.0)
    new = result("new", two_hours(-10.0, 5.0, 90), 13.0)  # stopped at 90 minutes
    pair = bench.describe_pair(old, new, marks=(30e-3, 100e-3))
    (old_hours, new_hours), (old_at, new_at) = pair.spans, pair.per_step
    assert old_hours == pytest.approx([-20.0, 10.0])
    assert new_hours == pytest.approx([-10.0])  # no second hour: not reached
    assert old_at == [old["curve"][i]["mean_return"] for i in (30, 100)]
    assert new_at == [new["curve"][30]["mean_return"], None]
    assert (pair.ratio, round(pair.gap, 6)) == (0.75, round(3.0 / 2**0.5, 6))
    first, second, last = pair.text.split("\n")
    assert first.startswith("old (float32, AMD EPYC): 0.12M agent steps")
    assert first.endswith("; episodes of minutes 0-60 -20.0, 60-120 10.0")
    assert second.endswith("(9 episodes); episodes of minutes 0-60 -10.0")
    assert last == "agent steps, new / old: 0.75; evaluation gap +2.1 SE"


def test_the_milestone_table_names_minutes_and_steps_or_says_not_reached(bench):
    curve = [
        {"minutes": 1.0, "agent_steps": 1e6, "mean_return": -12.0},
        {"minutes": 2.0, "agent_steps": 2.5e6, "mean_return": 1.0},
    ]
    result = {"name": "a", "env_id": "Pong-v4", "minutes": 2.0, "agent_steps": 2.5e6,
              "curve": curve, "cores": "0", "cpu": "AMD EPYC",
              "eval": {"mean": 3.0, "std": 1.0}}  # fmt: skip
    table = bench.milestone_table([result], "Pong-v4")
    assert "| to -10 | to 0 | to 15 | to 18 |" in table
    assert (
        "| a | 20833 | 2 min (2.5M) | 2 min (2.5M) | not in 2 min | not in 2 min |"
        in table
    )
    other = dict(result, env_id="Breakout-v4")
    assert "| a |" not in bench.milestone_table([other], "Pong-v4")
    report = bench.full_report([result, other])
    assert "running mean, Breakout-v4" in report and "running mean, Pong-v4" in report


def test_a_run_stopped_before_its_budget_is_not_evaluated(bench, monkeypatch):
    """A trainer stopped by Ctrl-C or SIGTERM exits 0 with a checkpoint: the script
    must not take that for the end of the budget (here the trainer is given 0.2 of
    the run's 0.5 minutes, as if stopped)."""
    command = bench.train_command

    def stopped_early(*args):
        return [a.replace("=0.5", "=0.2") for a in command(*args)]

    monkeypatch.setattr(bench, "train_command", stopped_early)
    with pytest.raises(SystemExit, match=r"stopped after 0\.\d of 0\.5 minutes: run"):
        run_tiny(bench, 0.5)
    assert not (bench.RESULTS / "tiny.json").exists()
    assert 0.2 <= bench.trained_minutes(bench.RUNS / "tiny") < 0.5


def test_the_evaluation_gap_is_in_standard_errors_of_the_difference(bench):
    a = {"eval": {"mean": 2.0, "std": 3.0, "episodes": 9}}  # SE 1
    b = {"eval": {"mean": -2.0, "std": 4.0, "episodes": 4}}  # SE 2
    assert bench.eval_gap(a, b) == pytest.approx(4 / 5**0.5)
    assert bench.eval_gap(b, a) == pytest.approx(-4 / 5**0.5)


def test_lr_changes_are_the_rows_where_the_logged_rate_moves(bench):
    curve = [{"lr": None}, {"lr": 5e-4}, {"lr": 5e-4}, {"lr": 1.25e-4}, {"lr": 1.25e-4}]
    assert bench.lr_changes(curve) == [curve[3]]
    assert bench.lr_changes([{"minutes": 1.0}]) == []  # a curve from before the column


def test_no_two_runs_of_a_game_share_a_color_and_line_style(bench):
    curve = [{"minutes": m, "agent_steps": m * 100, "mean_return": -m} for m in (1, 2)]
    results = [
        {"name": f"r{i}", "env_id": "Pong-v4", "cores": "0", "curve": curve}
        for i in range(45)  # Pong has more than 30 runs
    ]
    axes = bench.figure(results).axes
    for ax in axes:
        looks = {(line.get_color(), line.get_linestyle()) for line in ax.get_lines()}
        assert len(looks) == 45


def test_cpu_names_are_shortened_for_tables(bench):
    assert bench.short_cpu("Intel(R) Xeon(R) Processor, AVX512_BF16, AMX") == (
        "Intel Xeon (AVX-512)"
    )
    assert bench.short_cpu("AMD EPYC, AVX512_BF16") == "AMD EPYC (AVX-512)"
    old = {"cpu": "AMD EPYC, AVX512_BF16"}  # a result from before "cpus"
    assert bench.table_cpu(old) == "AMD EPYC (AVX-512)"
    # two EPYCs: the table tells them apart by their vector kernels
    assert bench.short_cpu("AMD EPYC, torch kernels: AVX2") == "AMD EPYC (AVX2)"
    wide = "AMD EPYC, torch kernels: AVX512, native bfloat16"
    assert bench.short_cpu(wide) == "AMD EPYC (AVX-512)"
    moved = {"cpus": [{"cpu": "AMD EPYC, torch kernels: AVX2"}, {"cpu": wide}]}
    assert bench.table_cpu(moved) == "AMD EPYC (AVX2) then AMD EPYC (AVX-512)"
    assert bench.short_cpu("AMD EPYC") == "AMD EPYC"  # the oldest format: no flags


def test_a_cpu_recorded_in_the_older_format_is_the_same_only_with_the_same_bfloat16():
    here = "AMD EPYC, torch kernels: AVX2"
    assert learning_speed.same_cpu(here, here)
    assert not learning_speed.same_cpu(here, "AMD EPYC, torch kernels: AVX512")
    assert learning_speed.same_cpu("AMD EPYC", here)  # lscpu's name, no bfloat16
    assert not learning_speed.same_cpu("AMD EPYC, AVX512_BF16", here)
    bf16 = "Intel(R) Xeon(R) Processor, torch kernels: AVX512, native bfloat16"
    assert learning_speed.same_cpu("Intel(R) Xeon(R) Processor, AVX512_BF16, AMX", bf16)
    assert not learning_speed.same_cpu("AMD EPYC, AVX512_BF16", bf16)  # another model


def test_a_folder_that_trained_before_cpus_were_kept_starts_with_an_unknown_cpu(bench):
    run_tiny(bench, 0.2)
    run_dir = bench.RUNS / "tiny"
    (run_dir / bench.CPUS).unlink()  # as in a folder from before cpus.json
    assert bench.run_cpus(run_dir) == [{"from_minute": 0.0, "cpu": bench.UNKNOWN_CPU}]
    bench.note_cpu(run_dir)
    unknown, here = bench.run_cpus(run_dir)
    assert unknown == {"from_minute": 0.0, "cpu": bench.UNKNOWN_CPU}
    assert here["cpu"] == cpu_description() and here["from_minute"] >= 0.2
