"""The shapes preset's time to accuracy: today's ``train --config shapes`` against an older
commit's, back to back on this machine.

    python benchmarks/shapes_speed.py --old 769373b --uncapped --seeds 0,1,2   # the table
    python benchmarks/shapes_speed.py --seeds 0,1,2            # 552eca6's command, as it was
    python benchmarks/shapes_speed.py --profile                # where one run's seconds go
    python benchmarks/shapes_speed.py --profile --profile-steps 300   # the same, shorter
    python benchmarks/shapes_speed.py --old HEAD --uncapped --new-args "--steps 1500"
                                                               # a candidate against today's

A run is the whole command, ``python -m ssdlearn train --config shapes --seed S --out DIR
--no-progress``, timed from the start of the process to its exit (start-up, data, training
steps, evaluation on the 500 held-out images, checkpoints). The old one runs from a ``git
worktree`` of ``--old`` (default 552eca6, the commit before the preset was retuned, whose
command stops after 4.5 minutes; 769373b is the last commit with its preset, the tiny SSD at
width 32 with default boxes of ratios 1 to 4, and no time limit: with ``--uncapped`` it runs
that preset to the end). Both are scored by their own ``metrics.json``; the targets are
mAP@0.5 >= 0.95 and mAP >= 0.70. ``--new-args`` adds options to this tree's command only: a
candidate preset, timed against today's (``--old HEAD``).

``--profile`` times the phases of one run of each preset inside this process (today's code,
the old preset's values kept below; the new one with ``--new-args`` applied): data
(generating and collating batches), the training step (matching, forward, loss, backward,
optimizer), evaluation, checkpoints, and the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"map_50": 0.95, "map": 0.70}
# The preset as commit 552eca6 defines it (ssdlearn/train.py there), for --profile.
OLD_PRESET = dict(
    width=32, aspect_ratios=(2, 3, 4), scale_range=(0.1, 0.9), alpha=1.0, train_images=50_000,
    val_images=500, shapes_min_scale=0.1, augment=False, batch_size=16, steps=1700,
    optimizer="adamw", lr=3e-3, weight_decay=1e-4, warmup_steps=50,
    lr_milestones=(1330, 1560), grad_clip=10.0, workers=0, burst=0, log_every=25,
    eval_every=1700, checkpoint_every=500, max_minutes=4.5, small_size=None, small_fraction=0.0,
)


def run_command(source: Path, seed: int, out: Path, uncapped: bool,
                extra: Sequence[str] = ()) -> dict:
    """One ``train --config shapes`` from the checkout at ``source``; wall time and metrics.
    ``extra``: more options for the command (fields of the preset to change)."""
    command = [sys.executable, "-m", "ssdlearn", "train", "--config", "shapes", "--seed",
               str(seed), "--out", str(out), "--no-progress", *extra]
    if uncapped:
        command += ["--max-minutes", "none"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    subprocess.run(command, cwd=source, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    met = all(metrics.get(key, 0) >= value for key, value in TARGETS.items())
    return {"seed": seed, "wall_s": round(wall, 1), "steps": metrics["steps"],
            "map": metrics.get("map"), "map_50": metrics.get("map_50"), "targets_met": met}


def compare(old_ref: str, seeds: list[int], uncapped: bool, new_args: Sequence[str] = ()) -> dict:
    results: dict = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree),
                        old_ref], check=True, capture_output=True)
        try:
            for seed in seeds:
                for name, source in (("old", old_tree), ("new", ROOT)):
                    run = run_command(source, seed, Path(scratch) / f"{name}{seed}", uncapped,
                                      new_args if name == "new" else ())
                    results[name].append(run)
                    print(f"{name} seed {seed}: {run['wall_s']:6.1f} s, {run['steps']} steps, "
                          f"mAP {run['map']:.3f}, mAP@0.5 {run['map_50']:.3f}, targets "
                          f"{'met' if run['targets_met'] else 'missed'}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(old_tree)], check=False, capture_output=True)
    old = statistics.fmean(r["wall_s"] for r in results["old"])
    new = statistics.fmean(r["wall_s"] for r in results["new"])
    print(f"\nmean wall time: old ({old_ref}) {old:.1f} s, new {new:.1f} s: "
          f"{old / new:.2f}x faster")
    return {**results, "old_ref": old_ref, "uncapped": uncapped, "new_args": list(new_args),
            "speedup": round(old / new, 2)}


def profile(preset: dict | None, steps: int | None = None) -> dict:
    """Seconds per phase of one in-process run of the shapes preset (or of ``preset``),
    stopped after ``steps`` training steps when given (the evaluation still runs)."""
    import ssdlearn.progressive as progressive
    import ssdlearn.train as training
    from ssdlearn.config import CONFIGS

    config = dataclasses.replace(CONFIGS["shapes"], **(preset or {}))
    if steps is not None:
        config = dataclasses.replace(config, steps=steps, max_minutes=None)
    seconds = dict.fromkeys(("data", "step", "evaluation", "checkpoints"), 0.0)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
        return wrapper

    class TimedBatches:
        def __init__(self, batches):
            self.batches = batches

        def __next__(self):
            start = time.perf_counter()
            batch = next(self.batches)
            seconds["data"] += time.perf_counter() - start
            return batch

        def close(self):
            getattr(self.batches, "close", lambda: None)()

    originals = (training.make_train_loader, training.train_step, training.evaluate,
                 training.save_checkpoint)
    training.make_train_loader = lambda *a, **k: TimedBatches(originals[0](*a, **k))
    progressive.make_train_loader = training.make_train_loader  # the small phase's batches
    training.train_step = timed("step", originals[1])
    training.evaluate = timed("evaluation", originals[2])
    training.save_checkpoint = timed("checkpoints", originals[3])
    try:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = training.train(config, out, progress=False)
            total = time.perf_counter() - start
    finally:
        (training.make_train_loader, training.train_step, training.evaluate,
         training.save_checkpoint) = originals
        progressive.make_train_loader = originals[0]
    seconds["other"] = total - sum(seconds.values())
    seconds["total"] = total
    return {"steps": result["steps"], "map": result.get("map"),
            "map_50": result.get("map_50"), "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def preset_changes(options: Sequence[str]) -> dict:
    """``["--width", "24", ...]`` as fields of the shapes preset, parsed as the train command
    parses them."""
    from ssdlearn.cli import _parse_value
    from ssdlearn.config import CONFIGS, TrainConfig

    if len(options) % 2:
        raise ValueError(f"--new-args: expected pairs of --field value, got {options}")
    kinds = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for flag, text in zip(options[::2], options[1::2]):
        name = flag.removeprefix("--").replace("-", "_")
        if name not in kinds:
            raise ValueError(f"--new-args: {flag} is not a field of TrainConfig")
        try:
            changes[name] = _parse_value(text, getattr(CONFIGS["shapes"], name), kinds[name])
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise ValueError(f"--new-args {flag} {text}: {error}") from None
    return changes


def startup_seconds() -> float:
    """Python start-up and the imports of the train command, in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ssdlearn.train, ssdlearn.cli"], check=True,
                   cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--old", default="552eca6", help="the commit to compare with")
    parser.add_argument("--uncapped", action="store_true",
                        help="run both without their max_minutes stop")
    parser.add_argument("--new-args", default="",
                        help="options added to this tree's command, to time a candidate "
                             "preset, e.g. \"--width 24 --aspect-ratios 4\"")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-steps", type=int, default=None,
                        help="profile only this many steps (then the evaluation)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    import torch

    machine = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.profile:
        result = {"startup_s": round(startup_seconds(), 1),
                  "old_preset": profile(OLD_PRESET, args.profile_steps),
                  "new_preset": profile(preset_changes(shlex.split(args.new_args)),
                                        args.profile_steps)}
        phases = ("data", "step", "evaluation", "checkpoints", "other", "total")
        print(f"\n{'phase':12s} {'old preset':>11s} {'new preset':>11s}")
        print(f"{'start-up':12s} {result['startup_s']:10.1f}s {result['startup_s']:10.1f}s")
        for phase in phases:
            print(f"{phase:12s} {result['old_preset']['seconds'][phase]:10.1f}s "
                  f"{result['new_preset']['seconds'][phase]:10.1f}s")
        for name in ("old_preset", "new_preset"):
            run = result[name]
            print(f"{name}: {run['steps']} steps, mAP {run['map']:.3f}, "
                  f"mAP@0.5 {run['map_50']:.3f}")
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        result = compare(args.old, seeds, args.uncapped, shlex.split(args.new_args))
    result["machine"] = machine
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
