"""Learning per wall-clock minute: train from scratch for a time budget, then evaluate.

Agent steps per second is not learning per hour: a setup that makes fewer, larger
updates can run faster and still learn slower. This benchmark measures what a reader
feels, the score after so many minutes on their own machine:

    # one configuration on one core (resumable: run it again to go on to the budget)
    python benchmarks/learning_speed.py run pong-rollout5 --env Pong-v4 \\
        --minutes 45 --core 1 --set rollout_len=5
    # two configurations side by side, one core each: a fair A/B on a shared machine
    python benchmarks/learning_speed.py compare --env Pong-v4 --minutes 45 \\
        pong-default: pong-rollout5:rollout_len=5
    # branches of a finished run, side by side: its run folder copied, resumed with a
    # change or none (the budget counts the parent's minutes: 120 + 60 here)
    python benchmarks/learning_speed.py compare --env Pong-v4 --minutes 180 \\
        --from pong-bf16-k4-2core pong-bf16-k4-2core-more: \\
        pong-bf16-k4-2core-lr1.25e-4:lr=1.25e-4
    # the results table and plot of every committed result
    python benchmarks/learning_speed.py report

`run` trains with the real CLI (`python -m a3c_core train --train-minutes M`) pinned
with `taskset` to the given cores, in runs/learning-speed/<name> (not committed),
then evaluates the final model over 30 sampled episodes with `python -m a3c_core
evaluate` and writes benchmarks/learning_speed/<name>.json: the config, the CPU, the
minutes and agent steps trained, the running mean at every log row and the
evaluation. The budget counts training time already spent (it is kept in the run
folder), so an interrupted run resumes where it stopped.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

from a3c_core.checkpoint import load_training_checkpoint
from a3c_core.network import cpu_description
from a3c_core.runs import CHANGES, CHECKPOINT, CONFIG, LOG, MODEL, read_log

if __package__ in (None, ""):  # run as a script: the repository root holds benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.forks import span_means  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "learning_speed"
RUNS = ROOT / "runs" / "learning-speed"
EVAL_EPISODES = 30
TABLE_START, TABLE_END = "<!-- table: learning_speed.py report -->", "<!-- end -->"


def short_cpu(cpu: str) -> str:
    """'Intel(R) Xeon(R) Processor, AVX512_BF16' -> 'Intel Xeon (AVX-512)', for
    tables: sessions got two AMD EPYCs, one with AVX-512 and one without, so the
    vector width names the machine. A record of the oldest format without flags
    ('AMD EPYC') gives the model alone."""
    width = "AVX-512" if "AVX512" in cpu else "AVX2" if "AVX2" in cpu else None
    return f"{cpu_model(cpu)} ({width})" if width else cpu_model(cpu)


def cpu_model(cpu: str) -> str:
    """'Intel(R) Xeon(R) Processor, AVX512_BF16' -> 'Intel Xeon'."""
    name = cpu.split(",")[0].replace("(R)", "").replace("(TM)", "")
    return name.replace(" Processor", "").strip()


def same_cpu(recorded: str, here: str) -> bool:
    """Is the CPU a run folder recorded the one cpu_description() gives here?
    Folders from before it recorded lscpu's model name and bfloat16 flags
    ("AMD EPYC, AVX512_BF16"): those compare by model and native bfloat16."""
    if "torch kernels" in recorded:
        return recorded == here
    native = "AVX512_BF16" in recorded or "AMX" in recorded
    return (cpu_model(recorded), native) == (cpu_model(here), "native bfloat16" in here)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """['rollout_len=5', 'lr=1e-3'] -> {'rollout_len': '5', 'lr': '1e-3'}."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: expected name=value, got {item!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def train_command(name, env_id, minutes, overrides, preset) -> list[str]:
    """The CLI command that trains (or resumes) run `name` up to `minutes`."""
    run_dir = RUNS / name
    if (run_dir / CHECKPOINT).exists():
        where = ["--resume", str(run_dir)]
    else:
        where = ["--run-dir", str(run_dir), "--preset", preset]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    return [sys.executable, "-m", "a3c_core", "train", "--env", env_id, *where,
            f"--train-minutes={minutes}", "--total-steps=1000000000",
            "--no-progress", *flags]  # fmt: skip


def eval_command(name, env_id, episodes) -> list[str]:
    out = RUNS / name / "eval.json"
    return [sys.executable, "-m", "a3c_core", "evaluate", "--env", env_id,
            "--checkpoint", str(RUNS / name), "--episodes", str(episodes),
            "--out", str(out)]  # fmt: skip


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    return ["taskset", "-c", cores, *cmd] if cores else cmd


def read_curve(run_dir: Path) -> list[dict]:
    """Every log row as {minutes, agent_steps, episodes, mean_return, lr, entropy}
    (entropy: the policy's mean entropy per step in nats, how sharp it has become)."""
    return [
        {
            "minutes": round(row["elapsed_s"] / 60, 3),
            "agent_steps": row["agent_steps"],
            "episodes": row["episodes"],
            "mean_return": row["mean_return"],
            "lr": row["lr"],  # None in logs from before the lr column
            "entropy": row["entropy"],
        }
        for row in read_log(run_dir)
    ]


def summarize(name, env_id, minutes, cores, overrides, preset, parent=None) -> dict:
    """The result of a finished run: config, machine, curve and evaluation."""
    run_dir = RUNS / name
    curve = read_curve(run_dir)
    if not curve:
        raise SystemExit(f"error: {run_dir} has no log rows yet: give it more minutes")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    cpus = run_cpus(run_dir)
    return {
        "name": name,
        "env_id": env_id,
        "preset": preset,
        "overrides": overrides,
        "config": json.loads((run_dir / "config.json").read_text()),
        "cpu": " then ".join(c["cpu"] for c in cpus),
        "cpus": cpus,
        "cores": cores,
        "budget_minutes": minutes,
        "minutes": curve[-1]["minutes"],
        "agent_steps": curve[-1]["agent_steps"],
        "curve": curve,
        "eval": {k: evaluation[k] for k in ("episodes", "mean", "std", "min", "max")},
        "branched_from": branched_from(run_dir),
        "command": " ".join(
            [
                "python benchmarks/learning_speed.py run",
                name,
                "--env",
                env_id,
                "--minutes",
                str(minutes),
                "--core",
                cores or "all",
                "--preset",
                preset,
            ]
            + ([f"--from {parent}"] if parent else [])
            + [f"--set {k}={v}" for k, v in overrides.items()]
        ),  # fmt: skip
        "date": datetime.date.today().isoformat(),
    }


def saved_progress(run_dir: Path) -> dict:
    """The progress in the run's checkpoint (what a resume goes on from)."""
    return load_training_checkpoint(run_dir)["progress"]


def trained_minutes(run_dir: Path) -> float:
    """Training minutes in the run's checkpoint."""
    return saved_progress(run_dir)["elapsed_s"] / 60


CPUS = "cpus.json"  # in a run folder: each CPU it trained on, from which minute
UNKNOWN_CPU = "unknown CPU"  # before a run folder kept CPUS


def note_cpu(run_dir: Path) -> None:
    """Add this machine's CPU to the run folder's CPUS, with the minutes trained
    before it, unless the run's last CPU was the same: sessions may land on other
    machines, and a resumed run's result should say which it trained on. A folder
    that trained before CPUS was kept starts with UNKNOWN_CPU, so that its earlier
    minutes are not credited to this machine."""
    path, cpu = run_dir / CPUS, cpu_description()
    starts = json.loads(path.read_text()) if path.exists() else []
    if starts and same_cpu(starts[-1]["cpu"], cpu):
        return
    minutes = trained_minutes(run_dir) if (run_dir / CHECKPOINT).exists() else 0.0
    if not starts and minutes > 0:
        starts.append({"from_minute": 0.0, "cpu": UNKNOWN_CPU})
    starts.append({"from_minute": round(minutes, 1), "cpu": cpu})
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(starts, indent=1) + "\n")
    os.replace(tmp, path)


def run_cpus(run_dir: Path) -> list[dict]:
    """The run's CPUS ([{from_minute, cpu}]); for a folder from before CPUS,
    UNKNOWN_CPU from minute 0 (as note_cpu records it when such a folder resumes)."""
    path = run_dir / CPUS
    if path.exists():
        return json.loads(path.read_text())
    return [{"from_minute": 0.0, "cpu": UNKNOWN_CPU}]


BRANCH = "branch.json"  # in a branch's run folder: where it left its parent


def branch(parent: str, name: str) -> None:
    """Copy the parent's run folder to `name` unless it exists (a resumed branch),
    with BRANCH naming the parent's minutes and agent steps at the copy. Copied
    beside it and renamed, so an interrupted copy is never taken for a run."""
    run_dir, source = RUNS / name, RUNS / parent
    if run_dir.exists():
        return
    if not (source / CHECKPOINT).exists():
        raise SystemExit(f"error: {source} has no checkpoint to branch from")
    tmp = run_dir.with_name(name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    keep = {CHECKPOINT, MODEL, CONFIG, LOG, CHANGES, CPUS}  # not the lock, fence, eval
    shutil.copytree(source, tmp, ignore=lambda _, names: set(names) - keep)
    progress = saved_progress(tmp)
    point = {
        "name": parent,
        "minutes": round(progress["elapsed_s"] / 60, 3),
        "agent_steps": progress["agent_steps"],
    }
    (tmp / BRANCH).write_text(json.dumps(point) + "\n")
    os.replace(tmp, run_dir)


def branched_from(run_dir: Path) -> dict | None:
    """The parent's name, minutes and agent steps where a branch began (else None)."""
    path = run_dir / BRANCH
    return json.loads(path.read_text()) if path.exists() else None


def start(name, env_id, minutes, cores, overrides, preset):
    """Start the training process of one run; its output goes to <run>.out."""
    RUNS.mkdir(parents=True, exist_ok=True)
    note_cpu(RUNS / name)
    cmd = pinned(train_command(name, env_id, minutes, overrides, preset), cores)
    out = open(RUNS / f"{name}.out", "a")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def evaluate_all(names: list[str], env_id, cores: list, episodes) -> None:
    """Evaluate the trained runs at once, each on its run's cores (eval.json)."""
    procs = [
        subprocess.Popen(
            pinned(eval_command(name, env_id, episodes), core),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for name, core in zip(names, cores)
    ]
    for name, proc in zip(names, procs):
        if proc.wait() != 0:
            raise SystemExit(f"error: evaluating {name} failed: {proc.returncode}")


def write_result(name, env_id, minutes, cores, overrides, preset, parent) -> Path:
    """Summarize the evaluated run into its result JSON (replaced atomically)."""
    result = summarize(name, env_id, minutes, cores, overrides, preset, parent)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def run_all(specs: list[tuple[str, dict]], args) -> None:
    """Train every spec at once (spec i on core i when side by side), then evaluate
    them at once, each on its core."""
    cores = [args.core] if len(specs) == 1 else [str(i) for i in range(len(specs))]
    for name, _ in specs if args.parent else []:
        branch(args.parent, name)
    procs = [
        start(name, args.env, args.minutes, core, overrides, args.preset)
        for (name, overrides), core in zip(specs, cores)
    ]
    codes = [p.wait() for p in procs]
    for (name, _), code in zip(specs, codes):
        if code != 0:
            raise SystemExit(f"error: {name} stopped with exit code {code}")
        trained = trained_minutes(RUNS / name)  # Ctrl-C and SIGTERM also exit 0
        if trained < args.minutes:
            raise SystemExit(
                f"{name} stopped after {trained:.1f} of {args.minutes:g} minutes: "
                "run the same command again to resume it"
            )
    evaluate_all([name for name, _ in specs], args.env, cores, args.episodes)
    for (name, overrides), core in zip(specs, cores):
        print(write_result(name, args.env, args.minutes, core, overrides,
                           args.preset, args.parent))  # fmt: skip


def load_results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]


def value_at(curve: list[dict], key: str, x: float) -> float | None:
    """The running mean at the last log row with curve[key] <= x (None before any)."""
    rows = [r for r in curve if r[key] <= x and r["mean_return"] is not None]
    return rows[-1]["mean_return"] if rows else None


def reached(curve: list[dict], key: str, x: float) -> float | None:
    """value_at, or None if the run stopped before curve[key] got to x."""
    return value_at(curve, key, x) if curve and curve[-1][key] >= x else None


def describe(run: dict, marks=(1, 2, 3, 4, 5), minutes=(60, 120)) -> tuple[list, str]:
    """A result's running mean at each mark (millions of agent steps; None past its
    end), and one line to compare runs by: precision, CPU, agent steps, those running
    means, the running mean at each of `minutes` it reached, its evaluation."""
    curve, ev = run["curve"], run["eval"]
    per_step = [reached(curve, "agent_steps", m * 1e6) for m in marks]
    by_time = [(m, reached(curve, "minutes", m)) for m in minutes]
    line = (
        f"{run['name']} ({run['config']['conv_dtype']}, {table_cpu(run)}): "
        f"{run['agent_steps'] / 1e6:.2f}M agent steps; running mean at "
        + ", ".join(f"{m}M {v:.1f}" for m, v in zip(marks, per_step) if v is not None)
        + "; at "
        + ", ".join(f"{m} min {v:.1f}" for m, v in by_time if v is not None)
        + f"; evaluation {ev['mean']:.1f} +- {ev['std']:.1f} "
        f"({ev['episodes']} episodes)"
    )
    return per_step, line


def pair_line(old: dict, new: dict) -> tuple[float, float, str]:
    """Two results of one pair: new's agent steps over old's, the evaluation gap
    (eval_gap) and one line saying both, naming the two runs (a pair may differ in
    more than one setting)."""
    ratio, gap = new["agent_steps"] / old["agent_steps"], eval_gap(new, old)
    names = f"{new['name']} / {old['name']}"
    line = f"agent steps, {names}: {ratio:.2f}; evaluation gap {gap:+.1f} SE"
    return ratio, gap, line


HOURS = ((0, 60), (60, 120))  # minutes: a 120-minute run's first and second hour
Pair = namedtuple("Pair", "per_step spans ratio gap text")


def describe_pair(old, new, marks, minutes=(60, 120), spans=HOURS, digits=1) -> Pair:
    """A pair's two results side by side: each one's running mean at the marks
    (describe) and the mean return of all its training episodes in each span of
    minutes it reached (span_means), then the pair's ratio and evaluation gap
    (pair_line). per_step and spans are (old's, new's); text is what to print."""
    per_step, means, lines = [], [], []
    for run in (old, new):
        at, line = describe(run, marks, minutes)
        last = run["curve"][-1]["minutes"]
        reached_spans = [(a, b) for a, b in spans if b <= last]
        means.append(span_means(run["curve"], reached_spans))
        shown = ", ".join(
            f"{a}-{b} {v:.{digits}f}" for (a, b), v in zip(reached_spans, means[-1])
        )
        lines.append(f"{line}; episodes of minutes {shown}" if shown else line)
        per_step.append(at)
    ratio, gap, line = pair_line(old, new)
    return Pair(tuple(per_step), tuple(means), ratio, gap, "\n".join([*lines, line]))


def first_reaching(curve: list[dict], key: str, score: float) -> float | None:
    """curve[key] (minutes or agent steps) when the running mean first reached score."""
    return next(
        (r[key] for r in curve if r["mean_return"] is not None
         and r["mean_return"] >= score),
        None,
    )  # fmt: skip


def eval_gap(a: dict, b: dict) -> float:
    """Evaluation mean of result a minus result b, in standard errors of the
    difference (each evaluation's std / sqrt(episodes))."""
    ea, eb = a["eval"], b["eval"]
    se = (ea["std"] ** 2 / ea["episodes"] + eb["std"] ** 2 / eb["episodes"]) ** 0.5
    return (ea["mean"] - eb["mean"]) / se


def table_cpu(result: dict) -> str:
    """The result's CPU, short; a run resumed on another CPU names both."""
    cpus = result.get("cpus") or [{"cpu": result["cpu"]}]  # older results: one
    return " then ".join(short_cpu(c["cpu"]) for c in cpus)


def report_table(results: list[dict]) -> str:
    """A markdown table: one row per result."""
    lines = [
        "| run | game | CPU | taskset cores | minutes | agent steps | steps/s "
        "| running mean | eval 30 sampled (mean +- std) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = r["agent_steps"] / (60 * r["minutes"])
        last = r["curve"][-1]["mean_return"]
        last = "n/a" if last is None else f"{last:.1f}"
        e = r["eval"]
        lines.append(
            f"| {r['name']} | {r['env_id']} | {table_cpu(r)} | {r['cores'] or 'all'} "
            f"| {r['minutes']:.0f} | {r['agent_steps'] / 1e6:.2f}M | {rate:.0f} "
            f"| {last} | {e['mean']:.1f} +- {e['std']:.1f} |"
        )
    return "\n".join(lines)


MILESTONES = {
    "Pong-v4": (-10, 0, 15, 18),
    "Breakout-v4": (20, 50, 100, 150),
    "SpaceInvaders-v4": (200, 300, 450, 550),
}
"""Running means whose first minute a report names per game: the seed's README scores
(Pong 18, Breakout 140-190, SpaceInvaders 470-550) and steps on the way there."""


def milestone_table(results: list[dict], game: str) -> str:
    """Minutes (and agent steps) until each run's running mean first reached each
    milestone of the game: what a reader waits, beside the steps per second."""
    marks = MILESTONES[game]
    lines = [
        "| run | steps/s | " + " | ".join(f"to {m}" for m in marks) + " |",
        "|---|---|" + "---|" * len(marks),
    ]
    for r in (r for r in results if r["env_id"] == game):
        cells = []
        for m in marks:
            minutes = first_reaching(r["curve"], "minutes", m)
            steps = first_reaching(r["curve"], "agent_steps", m)
            cells.append(
                f"not in {r['minutes']:.0f} min"
                if minutes is None
                else f"{minutes:.0f} min ({steps / 1e6:.1f}M)"
            )
        rate = r["agent_steps"] / (60 * r["minutes"])
        lines.append(f"| {r['name']} | {rate:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_report(results: list[dict]) -> str:
    """The results table, then the minutes to each milestone, one table per game."""
    parts = [report_table(results)]
    for game in sorted({r["env_id"] for r in results} & set(MILESTONES)):
        parts += [f"Minutes (agent steps) to a running mean, {game}:",
                  milestone_table(results, game)]  # fmt: skip
    return "\n\n".join(parts)


def write_table(readme: Path, table: str) -> None:
    """Replace the table between the README's two TABLE markers (atomically)."""
    text = readme.read_text()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    if not rest:
        raise SystemExit(f"error: {readme} has no {TABLE_START} marker")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")
    os.replace(tmp, readme)


def lr_changes(curve: list[dict]) -> list[dict]:
    """The rows whose logged learning rate differs from the row before's (a cut
    within a run; rows without an lr, from older logs, are skipped)."""
    rows = [p for p in curve if p.get("lr") is not None]
    return [b for a, b in zip(rows, rows[1:]) if b["lr"] != a["lr"]]


# twenty colors in each style: no two of a game's first 80 runs look alike
LINE_STYLES = ("-", "--", ":", "-.")


def figure(results: list[dict]):
    """Running mean against minutes and against agent steps, one row per game."""
    import matplotlib.pyplot as plt

    games = sorted({r["env_id"] for r in results})
    runs_of = {g: [r for r in results if r["env_id"] == g] for g in games}
    # each row tall enough for its legend, which sits right of the plots
    heights = [max(3.6, 0.17 * len(runs)) for runs in runs_of.values()]
    fig, axes = plt.subplots(len(games), 2, figsize=(14, sum(heights)), squeeze=False,
                             height_ratios=heights, layout="constrained")  # fmt: skip
    for row, game in zip(axes, games):
        for i, r in enumerate(runs_of[game]):
            pts = [p for p in r["curve"] if p["mean_return"] is not None]
            ys = [p["mean_return"] for p in pts]
            label = f"{r['name']} (cores: {r['cores'] or 'all'})"
            color, linestyle = plt.cm.tab20(i % 20), LINE_STYLES[i // 20 % 4]
            style = {"label": label, "color": color, "linestyle": linestyle}
            row[0].plot([p["minutes"] for p in pts], ys, **style)
            row[1].plot([p["agent_steps"] / 1e6 for p in pts], ys, **style)
            cut = {"marker": "v", "color": color}
            for p in lr_changes(pts):  # a plateau cut: a marker on the curve
                row[0].plot(p["minutes"], p["mean_return"], **cut)
                row[1].plot(p["agent_steps"] / 1e6, p["mean_return"], **cut)
        row[0].set(xlabel="training minutes", ylabel=f"{game} running mean")
        row[1].set(xlabel="agent steps (millions)")
        row[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def plot(results: list[dict], path: Path) -> None:
    """`figure` saved as a PNG (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    figure(results).savefig(path, dpi=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--env", default="Pong-v4")
        p.add_argument("--minutes", type=float, required=True)
        p.add_argument("--preset", choices=["default", "seed"], default="default")
        p.add_argument("--episodes", type=int, default=EVAL_EPISODES)
        p.add_argument("--from", dest="parent", help="branch from this run's folder")
        if name == "run":
            p.add_argument("name")
            p.add_argument("--core", help="taskset core list, e.g. 1 or 0,1")
            p.add_argument("--set", action="append", default=[], dest="overrides")
        else:
            p.add_argument("specs", nargs=2, help="name:key=value,key=value")
    sub.add_parser("report")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all([(args.name, parse_overrides(args.overrides))], args)
    elif args.command == "compare":
        specs = []
        for spec in args.specs:
            name, _, items = spec.partition(":")
            specs.append((name, parse_overrides([i for i in items.split(",") if i])))
        run_all(specs, args)
    else:
        results = load_results()
        print(full_report(results))
        plot(results, RESULTS / "learning_speed.png")
        write_table(RESULTS / "README.md", full_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
