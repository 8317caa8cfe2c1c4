"""Speed beside another CPU-bound program: the old thread policy against mlpot's default.

``mlpot demo`` on a 2-core machine where one other CPU-bound job ran trained 1 epoch in its 3-minute
budget instead of 33 and ran MD at 18 instead of 195 steps/s: torch used one thread per core and
its OpenMP threads spun while waiting for the one that was not running. This benchmark measures the
two halves of the demo under four conditions, each in a fresh process:

* workloads: **train** (``Trainer.train_step`` on the shipped ethanol set, batch 5, what
  ``mlpot demo`` trains; steps/s) and **md** (OpenMM ``LangevinMiddleIntegrator`` steps of ethanol on
  the CPU platform through TorchForce, with a random-init model of the demo's size; steps/s);
* load: **idle**, or **hog**: ``--hogs`` busy Python loops started 2 s before the measurement;
* policy: **old** (torch's default thread count, one per physical core: ``MLPOT_NUM_THREADS=<cores>``)
  or **new** (mlpot's default: the free cores; see ``mlpot/runtime.py``); ``--passive`` adds
  ``MLPOT_PASSIVE_WAIT=1`` (OpenMP threads sleep while they wait) to the new policy.

Conditions are interleaved (every repeat runs all of them in turn) so a slow drift of the machine
hits both policies alike; the table shows medians over repeats. The idle rows tell whether the
new policy costs speed on a quiet machine. Run it on a machine nobody else is using:

    python benchmarks/contention.py                 # ~10 min on 2 cores
    python benchmarks/contention.py --quick         # smoke test: a few steps, one repeat

Writes ``benchmarks/results/contention.json`` (``contention_quick.json`` with ``--quick``,
``contention_passive_wait.json`` with ``--passive``).
"""

import mlpot  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp (child processes)

# isort: split

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
ETHANOL = ROOT / "systems" / "ethanol" / "dft.extxyz"
HOG_HEAD_START_S = 2.0  # the hog runs this long before a measurement starts (so the thread policy sees it)
POLICIES = ("old", "new")
LOADS = ("idle", "hog")
WORKLOADS = ("train", "md")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MLPOT_NUM_THREADS", "MLPOT_PASSIVE_WAIT", "OMP_WAIT_POLICY")


# ---- the child: one measurement in a fresh process


def measure_train(arch: str, steps: int, warmup: int) -> Dict:
    """Steps/s of ``Trainer.train_step`` on ethanol, batch 5 (train_speed.py's measurement)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_speed import measure

    row = measure(arch, "default", ETHANOL, 5, "cpu", steps, warmup)
    return {"per_s": 1000.0 / row["median_step_ms"], "median_ms": row["median_step_ms"]}


def measure_md(model_path: str, steps: int, warmup: int) -> Dict:
    """Steps/s of OpenMM Langevin MD of ethanol with the model (md_speed.py's stepper, OpenMM's default threads)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from md_speed import openmm_stepper

    step = openmm_stepper(Path(model_path), "ethanol", os.cpu_count() or 1)
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - started
    return {"per_s": steps / elapsed, "median_ms": 1000.0 * elapsed / steps}


def child(args: argparse.Namespace) -> None:
    """Apply the thread policy as ``mlpot`` does, measure, print one JSON line."""
    import torch

    from mlpot import runtime

    decision = runtime.configure_threads()
    if args.child == "train":
        result = measure_train(args.arch, args.steps, args.warmup)
    else:
        result = measure_md(args.model, args.steps, args.warmup)
    result.update(threads=torch.get_num_threads(), wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"),
                  warning=decision.warning)
    print(json.dumps(result), flush=True)


# ---- the parent: conditions, hogs, table


def policy_environment(policy: str, passive: bool = False) -> Dict[str, str]:
    """The environment of a child under ``policy`` (see the module docstring)."""
    from mlpot.runtime import physical_cores

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if policy == "old":
        env.update(MLPOT_NUM_THREADS=str(physical_cores()))
    elif passive:
        env.update(MLPOT_PASSIVE_WAIT="1")
    return env


def start_hogs(count: int) -> List[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: Sequence[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        hog.wait()


def run_condition(workload: str, arch: str, model_path: Path, policy: str, load: str, hogs: int,
                  steps: int, warmup: int, timeout_s: float, passive: bool = False) -> Dict:
    """One child measurement under (policy, load); the hogs stop when it does."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", workload, "--arch", arch,
               "--model", str(model_path), "--steps", str(steps), "--warmup", str(warmup)]
    running = start_hogs(hogs) if load == "hog" else []
    try:
        if running:
            time.sleep(HOG_HEAD_START_S)
        environment = policy_environment(policy, passive)
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout_s)
    finally:
        stop_hogs(running)
    if done.returncode != 0:
        raise RuntimeError(f"{workload}/{policy}/{load} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(samples: Dict[tuple, List[Dict]]) -> List[Dict]:
    """Median steps/s per (workload, load, policy) and new/old ratios."""
    rows = []
    for workload in WORKLOADS:
        for load in LOADS:
            by_policy = {p: samples.get((workload, load, p), []) for p in POLICIES}
            if not all(by_policy.values()):
                continue
            median = {p: statistics.median(s["per_s"] for s in by_policy[p]) for p in POLICIES}
            rows.append({
                "workload": workload, "load": load,
                "old_steps_per_s": median["old"], "new_steps_per_s": median["new"],
                "new_over_old": median["new"] / median["old"],
                "old_threads": by_policy["old"][-1]["threads"], "new_threads": by_policy["new"][-1]["threads"],
                "new_warning": by_policy["new"][-1]["warning"],
                "samples": {p: [s["per_s"] for s in by_policy[p]] for p in POLICIES},
            })
    return rows


def format_table(rows: Sequence[Dict], arch: str, hogs: int) -> str:
    lines = [f"| workload ({arch}) | load | old steps/s (threads) | new steps/s (threads) | new/old |",
             "|---|---|---|---|---|"]
    for row in rows:
        load = row["load"] if row["load"] == "idle" else f"{hogs} hog{'s' if hogs > 1 else ''}"
        lines.append(f"| {row['workload']} | {load} | {row['old_steps_per_s']:.1f} ({row['old_threads']}) | "
                     f"{row['new_steps_per_s']:.1f} ({row['new_threads']}) | {row['new_over_old']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: few steps, one repeat")
    parser.add_argument("--passive", action="store_true",
                        help="the new policy with MLPOT_PASSIVE_WAIT=1 (writes contention_passive_wait.json)")
    parser.add_argument("--arch", choices=["egnn", "nequip"], default="nequip", help="the demo's default: nequip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=1, help="busy loops beside the measurement (default 1)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


STEPS = {"train": (30, 5), "md": (400, 50)}  # (timed, warm-up) per measurement
QUICK_STEPS = {"train": (2, 1), "md": (10, 3)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from md_speed import machine_info, make_model

    repeats = 1 if args.quick else args.repeats
    steps = QUICK_STEPS if args.quick else STEPS
    samples: Dict[tuple, List[Dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        model_path = make_model(args.arch, "default", Path(folder), {})["path"]
        for repeat in range(repeats):
            for workload in args.workloads:
                for load in LOADS:
                    for policy in POLICIES:
                        timed, warmup = steps[workload]
                        result = run_condition(workload, args.arch, model_path, policy, load, args.hogs,
                                               timed, warmup, timeout_s=900, passive=args.passive)
                        samples.setdefault((workload, load, policy), []).append(result)
                        print(f"repeat {repeat + 1}/{repeats} {workload:<5} {load:<4} {policy}: "
                              f"{result['per_s']:8.2f} steps/s, {result['threads']} threads, "
                              f"wait {result['wait_policy']}", flush=True)
    rows = summarise(samples)
    print()
    print(format_table(rows, args.arch, args.hogs))
    report = {
        "benchmark": "contention", "quick": args.quick, "passive_wait": args.passive, "arch": args.arch,
        "repeats": repeats, "hogs": args.hogs,
        "steps": {w: {"timed": steps[w][0], "warmup": steps[w][1]} for w in args.workloads},
        "machine": machine_info(os.cpu_count() or 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "contention_quick" if args.quick else "contention_passive_wait" if args.passive else "contention"
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
