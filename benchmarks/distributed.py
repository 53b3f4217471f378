"""Training on several machines, measured on one (issue 23; a3c_core.distributed).

    python benchmarks/distributed.py --env Pong-v4 --seconds 60 --rounds 2

Measures, on this machine:
  (a) agent steps/s of one rank with 2 workers (`python -m a3c_core train
      --num-workers 2`) and of two ranks with 1 worker each (`torchrun --standalone
      --nproc-per-node 2 -m a3c_core train --num-workers 1`), both 8 games per worker,
      read from the run's own log.csv after a warm-up; the setups alternate
      `--rounds` times, so that a change in the machine's load hits each. torchrun
      starts each rank in a session of its own, and where the kernel shares the CPU
      between sessions (sched_autogroup) two ranks get two shares of a busy machine;
      so the two ranks are also started here in this script's session, with the
      environment torchrun would give them ('2x1-one-session');
  (b) one sync of two ranks (`DistributedTrainer.sync`, the real method, with a
      typical report): its time, and the bytes it puts on the loopback interface
      (/proc/net/dev), beside the payload (the parameters, float32) and the report;
  (c) from (a) and (b), a model of N machines over 1 Gb/s and 10 Gb/s links: time and
      link share of a sync, and agent steps/s (on paper: one machine is here).
Writes benchmarks/distributed.json.

The machine may be shared: wall-clock rates then measure its load as much as the
setup, so each run also reports the CPU its processes used (cores) and its agent steps
per CPU-second, which do not depend on how much CPU the run was given. The 2-rank runs
sync every `sync_every` (the default, 5 s): rank 0's log counts the other rank's steps
as of the last sync, so each end of a window may lag by up to one sync.
"""

import argparse
import dataclasses
import datetime
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as torch_mp

from a3c_core.config import A3CConfig
from a3c_core.distributed import DistributedTrainer, join, leave, world_from_env
from a3c_core.network import cpu_description
from a3c_core.runs import read_log
from a3c_core.worker import EpisodeEnd, UpdateDone

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"
OUT = Path(__file__).resolve().parent / "distributed.json"
LINKS = {"1 Gb/s": 1e9, "10 Gb/s": 10e9}
NODES = (1, 2, 4, 8, 16, 32, 64)
SETUPS = ("1x2", "2x1", "2x1-one-session")
LAN_LATENCY_S = 100e-6  # one message between two machines on a LAN (assumed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launches(setup: str, env_id: str, minutes: float, run_dir: Path) -> list:
    """The (command, environment) of each process of one setup: '1x2' (one rank, 2
    workers), '2x1' (torchrun, two ranks of one worker), '2x1-one-session' (the same
    two ranks, started here with the environment torchrun gives them)."""
    flags = ["-m", "a3c_core", "train", "--env", env_id, "--envs-per-worker", "8",
             "--log-every", "5", "--train-minutes", f"{minutes:.4f}",
             "--total-steps", "1000000000", "--run-dir", str(run_dir),
             "--no-progress"]  # fmt: skip
    env = dict(os.environ)
    if setup == "1x2":
        return [([sys.executable, *flags, "--num-workers", "2"], env)]
    flags += ["--num-workers", "1"]  # and the default sync_every
    if setup == "2x1":
        torchrun = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2"]
        return [([*torchrun, *flags], env)]
    ranks = {
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    return [
        ([sys.executable, *flags], {**env, **ranks, "RANK": str(rank)})
        for rank in (0, 1)
    ]


def tree_cpu_seconds(roots) -> float:
    """CPU seconds (user + system) used so far by the processes `roots` and all
    their descendants that are alive (from /proc: no dependency)."""
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process just ended
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree = {pid for pid in used if pid in roots}
    for _ in range(5):  # torchrun -> rank -> worker, and a little more
        tree |= {pid for pid, ppid in parent.items() if ppid in tree}
    return sum(used[pid] for pid in tree)


def run_rate(setup: str, env_id: str, seconds: float, warmup: float) -> dict:
    """(a): train `setup` for warm-up + `seconds`; its logged agent steps/s between
    them (the final row, written while the ranks stop, is left out), and the CPU
    its processes used meanwhile (cores), which gives agent steps per CPU-second."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        minutes = (warmup + seconds + 10) / 60
        procs = [
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
            for cmd, env in launches(setup, env_id, minutes, run_dir)
        ]
        roots = {proc.pid for proc in procs}
        time.sleep(warmup)
        cpu, load = tree_cpu_seconds(roots), os.getloadavg()[0]
        time.sleep(seconds)
        cores = (tree_cpu_seconds(roots) - cpu) / seconds
        if any(proc.wait(600) for proc in procs):
            raise RuntimeError(f"{setup}: a process failed")
        rows = [
            r for r in read_log(run_dir) if warmup < r["elapsed_s"] <= warmup + seconds
        ]
    rate = (rows[-1]["agent_steps"] - rows[0]["agent_steps"]) / (
        rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    )
    return {
        "setup": setup,
        "agent_steps_per_s": round(rate, 1),
        "cores_used": round(cores, 2),
        "agent_steps_per_cpu_s": round(rate / cores, 1),
        "load_average": round((load + os.getloadavg()[0]) / 2, 2),
    }


def loopback_bytes() -> int:
    """Bytes sent over the loopback interface so far (every rank's, all processes)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, fields = line.partition(":")
        if name.strip() == "lo":
            return int(fields.split()[8])  # transmitted bytes
    raise RuntimeError("no loopback interface in /proc/net/dev")


def typical_report_events(trainer, sync_every: float = 5.0) -> None:
    """What a rank's workers report in `sync_every` seconds at the default setup's
    ~2000 agent steps/s: 2000 * 5 / 160 = ~60 updates and ~10 Pong episodes."""
    updates, episodes = round(2000 * sync_every / 160), 10
    for _ in range(updates):
        trainer.handle(UpdateDone(-12.3, -45.6, 78.9, 321.0))
    for _ in range(episodes):
        trainer.handle(EpisodeEnd(-20.0, 900))


def time_syncs(rank: int, port: int, syncs: int, results) -> None:
    """(b), in rank `rank` of a 2-rank gloo group: `syncs` real syncs, timed."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    world = world_from_env()
    join(world)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = DistributedTrainer(A3CConfig(), tmp, None, world)
            typical_report_events(trainer)
            report_bytes = len(pickle.dumps(trainer.report(done=False)))
            trainer.started, seconds = time.monotonic(), []
            sent = loopback_bytes()
            for _ in range(syncs):
                typical_report_events(trainer)
                start = time.perf_counter()
                trainer.sync(done=False)
                seconds.append(time.perf_counter() - start)
            sent = loopback_bytes() - sent
        params = sum(p.numel() for p in trainer.model.parameters())
        if rank == 0:
            results.put(sync_summary(seconds, sent / syncs, params, report_bytes))
    finally:
        leave(world)


def sync_summary(seconds, bytes_per_sync, params, report_bytes) -> dict:
    return {
        "parameters": params,
        "payload_bytes": 4 * params,  # float32
        "report_bytes": report_bytes,  # one rank's pickled Report (typical)
        "loopback_bytes_per_sync": round(bytes_per_sync),
        "sync_s_median": round(statistics.median(seconds), 4),
        "sync_s_min": round(min(seconds), 4),
        "syncs_timed": len(seconds),
    }


def measure_sync(syncs: int) -> dict:
    port = free_port()
    results = torch_mp.get_context("spawn").SimpleQueue()
    torch_mp.spawn(time_syncs, args=(port, syncs, results), nprocs=2)
    return results.get()


def predicted(nodes: int, link_bps: float, rate: float, sync: dict, every: float):
    """(c): one sync of `nodes` machines: ring all_reduce of the parameters (each
    machine sends and receives 2(N-1)/N of them) plus the all_gather of the reports
    ((N-1) reports in and out); the sync's own CPU time is at most what it took on
    loopback here, taken from the 2 worker cores of each machine."""
    wire = 2 * (nodes - 1) / nodes * sync["payload_bytes"]
    wire += (nodes - 1) * sync["report_bytes"]
    transfer_s = 8 * wire / link_bps + 2 * (nodes - 1) * LAN_LATENCY_S
    cpu_s = sync["sync_s_median"] if nodes > 1 else 0.0
    return {
        "nodes": nodes,
        "bytes_per_node_per_sync": round(wire),
        "sync_s": round(transfer_s + cpu_s, 4),
        "link_share": round(8 * wire / link_bps / every, 5),
        "agent_steps_per_s": round(nodes * rate * (1 - cpu_s / (2 * every))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pong-v4")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--syncs", type=int, default=30)
    parser.add_argument(
        "--node-rate",
        type=float,
        default=2113.0,
        help="agent steps/s of one machine in the model (default: the 2x8 rate "
        "benchmarks/throughput.py measured on an idle AMD EPYC with AVX-512, "
        "2026-11-29)",
    )
    args = parser.parse_args()
    runs = [
        run_rate(setup, args.env, args.seconds, args.warmup)
        for _ in range(args.rounds)
        for setup in SETUPS
    ]
    for run in runs:
        print(run, flush=True)
    sync = measure_sync(args.syncs)
    print(sync, flush=True)
    mean = {
        key: {
            s: round(statistics.mean(r[key] for r in runs if r["setup"] == s), 1)
            for s in SETUPS
        }
        for key in ("agent_steps_per_s", "agent_steps_per_cpu_s")
    }
    every = A3CConfig().sync_every
    model = {
        link: [predicted(n, bps, args.node_rate, sync, every) for n in NODES]
        for link, bps in LINKS.items()
    }
    report = {
        "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "cpu": cpu_description(),
        "cores": os.cpu_count(),
        "env_id": args.env,
        "runs": runs,
        "mean": mean,
        "ratios_over_1x2": {
            key: {s: round(m[s] / m["1x2"], 3) for s in SETUPS[1:]}
            for key, m in mean.items()
        },
        "sched_autogroup": Path("/proc/sys/kernel/sched_autogroup_enabled")
        .read_text()
        .strip(),
        "sync": sync,
        "model": {
            "node_agent_steps_per_s": args.node_rate,
            "sync_every_s": every,
            "lan_latency_s": LAN_LATENCY_S,
            **model,
        },
        "config": dataclasses.asdict(A3CConfig()),
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
