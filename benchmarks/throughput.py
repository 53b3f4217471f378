"""Training throughput on this machine, in agent steps per second (issue: throughput).

Measures, in one run and on one game:
  (a) env_limit:   the same environments stepping with random actions plus our
                   preprocessing, no network, one process per worker;
  (b) classic_a3c: the real trainer with one environment per worker (K = 1);
  (c) default:     the real trainer with the default A3CConfig;
  (d) auto:        the same with conv_dtype=auto (bfloat16 convolutions where the
                   CPU has them natively, float32 elsewhere);
  (e) learn_groups_4: the default with learn_groups=4 (4 updates per rollout, each
                   on 2 of a worker's 8 games: a setting issue 19 screened);
then the ratios c/a, c/b, d/c and e/c, inference speed on one core
(`a3c_core.play.evaluate`, and the network's forward pass alone) and where one
worker's time goes, for (c) and (e) (the package's own `run_worker`, its parts timed
where it calls them), alone and beside a second worker training the same shared model
and optimizer, as in the trainer. Writes benchmarks/throughput.json.

    python benchmarks/throughput.py --env Pong-v4 --seconds 40

Rates (b), (c) and (d) are read from the trainer's own log.csv after a warm-up, so they
include everything a real run does (Hogwild updates, logging, checkpoints).
"""

import argparse
import dataclasses
import datetime
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from threading import Event
from unittest import mock

import numpy as np
import torch

from a3c_core.config import A3CConfig
from a3c_core.envs import AtariBatch, num_actions
from a3c_core.network import ActorCritic, cpu_description
from a3c_core.play import evaluate
from a3c_core.runs import read_log
from a3c_core.train import MALLOC_TUNING, shared_model
from a3c_core.worker import SharedCounters, UpdateDone, WorkerFailed, worker_main

ROOT = Path(__file__).resolve().parent.parent


def env_only(env_id: str, num_envs: int, seconds: float, result) -> None:
    """Step `num_envs` games with random actions (preprocessing included)."""
    envs = AtariBatch(env_id, num_envs, seed=0, max_episode_steps=10_000)
    rng = np.random.default_rng(0)
    n_actions = envs.envs[0].action_space.n
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(rng.integers(n_actions, size=num_envs))
        steps += num_envs
    result.put(steps / (time.perf_counter() - start))


def env_limit(cfg: A3CConfig, seconds: float) -> float:
    """(a): all workers' environments, no network, one process per worker."""
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    args = (cfg.env_id, cfg.envs_per_worker, seconds, result)
    procs = [ctx.Process(target=env_only, args=args) for _ in range(cfg.num_workers)]
    for p in procs:
        p.start()
    rates = [result.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def trainer_rate(cfg: A3CConfig, seconds: float, warmup: float = 20.0) -> float:
    """(b) to (e): run the real CLI trainer, then average its logged steps/s."""
    with tempfile.TemporaryDirectory() as run_dir:
        flags = [
            f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(cfg).items()
        ]
        cmd = [sys.executable, "-m", "a3c_core", "train", *flags, "--log-every=5",
               f"--run-dir={run_dir}/run", "--no-progress"]  # fmt: skip
        env = {**os.environ, **MALLOC_TUNING}
        run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        time.sleep(warmup + seconds)
        run.send_signal(signal.SIGTERM)
        run.wait(120)
        rows = [r for r in read_log(Path(run_dir) / "run") if r["elapsed_s"] > warmup]
    steps = [r["agent_steps"] for r in rows]
    times = [r["elapsed_s"] for r in rows]
    return (steps[-1] - steps[0]) / (times[-1] - times[0])


class PartTimer:
    """Wall time per part of a worker's loop, added up by wrappers around the
    package's own functions; what the first `warmup` updates took is dropped."""

    def __init__(self, warmup: int):
        self.totals: dict[str, float] = {}
        self.warmup, self.updates, self.collect_start = warmup, 0, 0.0

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def timed(self, name: str, fn):
        """`fn`, adding the time of each call to part `name`."""

        def timed_fn(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.add(name, time.perf_counter() - start)
            return out

        return timed_fn

    def batch_class(self):
        """`AtariBatch`, timing `step` (games + preprocessing) and keeping itself."""
        timer = self

        class TimedBatch(AtariBatch):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                timer.batch = self

            step = timer.timed("environment + preprocessing", AtariBatch.step)

        return TimedBatch

    def collect(self, fn):
        """`collect`, remembering when it started: acting lasts until `update`."""

        def timed_collect(*args, **kwargs):
            self.collect_start = time.perf_counter()
            return fn(*args, **kwargs)

        return timed_collect

    def update(self, fn):
        """`update`, ending the acting part (collect + bootstrap) and counting."""

        def timed_update(*args, **kwargs):
            self.add("acting + environment", time.perf_counter() - self.collect_start)
            out = fn(*args, **kwargs)
            self.updates += 1
            if self.updates == self.warmup:  # caches and allocators are warm now
                self.totals = {}
            return out

        return timed_update


class OtherWorker:
    """A real worker process (`worker_main`, rank 1) training the given shared model
    and optimizer, with its own counters, until `stop`: the company a timed worker
    has in a run with two. Returns once it has made its first update."""

    def __init__(self, cfg: A3CConfig, shared, optimizer):
        ctx = mp.get_context("spawn")
        self.events, self.stopped = ctx.Queue(), ctx.Event()
        # kept: the shared memory of counters nobody holds here is reused by the next
        self.counters = SharedCounters(ctx)
        args = (1, cfg, shared, optimizer, self.counters, self.events)
        self.process = ctx.Process(
            target=worker_main, args=(*args, self.stopped), daemon=True
        )
        self.process.start()
        event = None
        while not isinstance(event, UpdateDone):
            if isinstance(event, WorkerFailed) or not self.process.is_alive():
                raise RuntimeError(f"the other worker stopped: {event}")
            try:
                event = self.events.get(timeout=1)
            except queue.Empty:
                pass

    def stop(self) -> None:
        self.stopped.set()
        while self.process.is_alive():  # drain: its queue must empty before it exits
            try:
                self.events.get(timeout=0.1)
            except queue.Empty:
                pass
        self.process.join()


def breakdown(
    cfg: A3CConfig, updates: int = 30, warmup: int = 2, beside: bool = False
) -> dict[str, float]:
    """Milliseconds per agent step of one worker's parts: the package's own
    `run_worker` on one core, timed where it calls `collect`, `update`, the games,
    `learn`, the gradient hand-over, the optimizer step and the weight sync. With
    `beside`, a second real worker trains the same shared model and optimizer
    meanwhile, as in a run with two workers."""
    from a3c_core import worker
    from a3c_core.preprocess import prepro

    torch.set_num_threads(1)
    K, T = cfg.envs_per_worker, cfg.rollout_len
    shared, optimizer = shared_model(cfg)
    other = OtherWorker(cfg, shared, optimizer) if beside else None
    cfg = dataclasses.replace(cfg, total_steps=(warmup + updates) * T * K)
    watch = PartTimer(warmup)
    optimizer.step = watch.timed("optimizer step", optimizer.step)
    parts = {
        "AtariBatch": watch.batch_class(),
        "collect": watch.collect(worker.collect),
        "update": watch.update(worker.update),
        "learn": watch.timed("learning (replay, loss, backward)", worker.learn),
        "hand_over_grads": watch.timed("optimizer step", worker.hand_over_grads),
        "pull_params": watch.timed("sync weights", worker.pull_params),
    }
    counters = SharedCounters(mp.get_context("spawn"))
    try:
        with mock.patch.multiple(worker, **parts):
            args = (0, cfg, shared, optimizer, counters, queue.Queue(), Event())
            worker.run_worker(*args)
    finally:
        if other is not None:
            other.stop()
    totals = watch.totals
    environment = totals.pop("environment + preprocessing")
    totals["acting (forward)"] = totals.pop("acting + environment") - environment
    start = time.perf_counter()
    for _ in range(updates * T):
        prepro(watch.batch.frames)  # (K, 210, 160, 3): as often as the games stepped
    totals["preprocessing"] = time.perf_counter() - start
    totals["environment"] = environment - totals["preprocessing"]
    per_step = {k: 1000 * v / (updates * T * K) for k, v in totals.items()}
    return dict(sorted(per_step.items(), key=lambda kv: -kv[1]))


def worker_rate(worker, cfg: A3CConfig) -> float:
    """Agent steps per second of one worker loop (`plain_worker` or `run_worker`),
    run in this process on a fresh shared model until cfg.total_steps: chapter 5
    compares the textbook worker with the fast one this way."""
    torch.set_num_threads(1)  # as worker_main does in a trainer's worker process
    shared, optimizer = shared_model(cfg)
    counters = SharedCounters(mp.get_context("spawn"))
    started = time.perf_counter()
    worker(0, cfg, shared, optimizer, counters, queue.Queue(), Event())
    steps = counters.steps.value
    if steps != cfg.total_steps:  # one worker stops after whole rollouts
        raise ValueError(f"{steps} agent steps: make total_steps whole rollouts")
    return steps / (time.perf_counter() - started)


def inference_rate(cfg: A3CConfig, episodes: int = 8) -> float:
    """Agent steps/s of `evaluate` (batched play) on one core, untrained weights."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ActorCritic(num_actions(cfg.env_id)).to(memory_format=torch.channels_last)
    start = time.perf_counter()
    results = evaluate(model.eval(), cfg.env_id, episodes=episodes, seed=0, num_envs=8)
    return sum(length for _, length in results) / (time.perf_counter() - start)


@torch.no_grad()
def network_rate(cfg: A3CConfig, batch: int = 8, seconds: float = 10.0) -> float:
    """Agent steps/s of the network's forward pass alone (no games), one core."""
    torch.set_num_threads(1)
    model = ActorCritic(num_actions(cfg.env_id)).to(memory_format=torch.channels_last)
    frames, hx = torch.rand(batch, 1, 80, 80), model.initial_state(batch)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, hx = model(frames, hx)
        steps += batch
    return steps / (time.perf_counter() - start)


# each variant measured against the default: what it changes
VARIANTS = {
    "classic_a3c": {"envs_per_worker": 1},
    "auto": {"conv_dtype": "auto"},
    "learn_groups_4": {"learn_groups": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pong-v4")
    parser.add_argument("--seconds", type=float, default=40.0, help="per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "throughput.json"))
    args = parser.parse_args()
    default = A3CConfig(env_id=args.env)
    cfgs = {"default": default}
    cfgs.update({name: dataclasses.replace(default, **changes)
                 for name, changes in VARIANTS.items()})  # fmt: skip
    rates = {"env_limit": env_limit(default, args.seconds)}
    print(f"env_limit: {rates['env_limit']:.0f} steps/s", flush=True)
    for name, cfg in cfgs.items():
        rates[name] = trainer_rate(cfg, args.seconds)
        print(f"{name}: {rates[name]:.0f} steps/s", flush=True)
    report = {
        "command": "python benchmarks/throughput.py "
        f"--env {args.env} --seconds {args.seconds:g}",
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "env_id": args.env,
        "cores": os.cpu_count(),
        "cpu": cpu_description(),
        "configs": {"default": dataclasses.asdict(default), **VARIANTS},
        "steps_per_s": rates,
        "ratios": {
            "default_over_env_limit": rates["default"] / rates["env_limit"],
            "default_over_classic": rates["default"] / rates["classic_a3c"],
            "auto_over_default": rates["auto"] / rates["default"],
            "learn_groups_4_over_default": rates["learn_groups_4"] / rates["default"],
        },
        "inference_steps_per_s_one_core": inference_rate(default),
        "network_forward_steps_per_s_one_core": network_rate(default),
        "breakdown_ms_per_step": breakdown(default),
        "breakdown_ms_per_step_learn_groups_4": breakdown(cfgs["learn_groups_4"]),
        "breakdown_ms_per_step_beside_another": breakdown(default, beside=True),
        "breakdown_ms_per_step_learn_groups_4_beside_another": breakdown(
            cfgs["learn_groups_4"], beside=True
        ),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    missing = {k: v for k, v in MALLOC_TUNING.items() if k not in os.environ}
    if missing:  # glibc reads them at start-up: run again with them, as workers do
        argv = [sys.executable, *sys.argv]
        os.execve(sys.executable, argv, {**os.environ, **missing})
    main()
