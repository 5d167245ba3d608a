"""The paper's ablations (Tables 2 and 3) in miniature: the tiny SSD with one idea out.

    python benchmarks/ablations.py                       # every variant, seeds 0 and 1
    python benchmarks/ablations.py --variants full,no_mining --seeds 0 --out /tmp/a.json

Each variant (``ssdlearn.ablation``: full, no_mining, no_best_box, no_ratio_3,
no_ratio_2_3, no_finest_map, no_coarsest_map, augmentation) trains ``ablation_base()``, the
shapes preset's data, steps, optimizer, schedule and precision with the tiny SSD that has
every idea of the paper (width 32, default boxes of ratios 1 to 4), from the same seed on
the same images in the same order, and is scored on the same 500 held-out images. Per
variant and seed: mAP@[.5:.95], mAP@0.5, AP on small / medium / large objects (COCO's
areas, in the 96x96 images), the number of default boxes, training images per second,
seconds, and the training loss averaged over every 25 steps. Lesson 11 reads the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ssdlearn.ablation import VARIANTS, ablation_base, summary, train_variant

ROOT = Path(__file__).resolve().parent


def one_run(variant: str, config) -> dict:
    """Train and score one variant; the loss kept as a mean over every 25 steps."""
    run = train_variant(variant, config)
    losses = torch.tensor(run.pop("losses"))
    run["loss_every_25"] = [round(x, 4) for x in
                            losses[: len(losses) // 25 * 25].view(-1, 25).mean(dim=1).tolist()]
    return run


def _one_thread() -> None:
    torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: the preset's); warmup and "
                             "learning-rate milestones scale with them")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, one torch thread each (default 1: one at a time)")
    parser.add_argument("--out", default=str(ROOT.parent / "lessons" / "assets" / "ablations.json"))
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    base = ablation_base()
    if args.steps is not None:  # a shorter budget: the whole schedule shrinks with it
        scale = args.steps / base.steps
        base = dataclasses.replace(
            base, steps=args.steps, warmup_steps=max(1, round(base.warmup_steps * scale)),
            lr_milestones=tuple(round(m * scale) for m in base.lr_milestones))
    jobs = [(variant, dataclasses.replace(base, seed=int(seed)))
            for seed in args.seeds.split(",") for variant in variants]
    runs, started = [], time.perf_counter()
    # --jobs N: N runs at once, one torch thread each (on 2 cores, 2 one-thread runs get
    # through more work than one two-thread run at a time; images/s is then per thread).
    pool = ProcessPoolExecutor(args.jobs, initializer=_one_thread) if args.jobs > 1 else None
    results = (pool.map(one_run, *zip(*jobs)) if pool else (one_run(*job) for job in jobs))
    for run in results:
        runs.append(run)
        print(f"{run['variant']:16s} seed {run['seed']}: mAP {run['map']:.3f}  "
              f"mAP@0.5 {run['map_50']:.3f}  small/medium/large {run['map_small']:.3f}/"
              f"{run['map_medium']:.3f}/{run['map_large']:.3f}  "
              f"{run['images_per_second']:.0f} img/s", flush=True)
    if pool:
        pool.shutdown()
    total = time.perf_counter() - started
    print(f"\n{'variant':16s} {'mAP':>13s} {'mAP@0.5':>13s}  (mean ± spread over seeds)")
    for row in summary(runs):
        print(f"{row['variant']:16s} {row['map']:.3f} ± {row['map_spread']:.3f}"
              f"   {row['map_50']:.3f} ± {row['map_50_spread']:.3f}")
    print(f"total {total / 60:.1f} min")
    result = {
        "command": "python benchmarks/ablations.py " + " ".join(
            f"--{k} {v}" for k, v in (("variants", args.variants), ("seeds", args.seeds),
                                      ("steps", args.steps), ("jobs", args.jobs))
            if v is not None),
        "machine": f"{os.cpu_count()} cores, CPU kernels "
                   f"{torch.backends.cpu.get_cpu_capability()}, "
                   f"{1 if args.jobs > 1 else torch.get_num_threads()} torch thread(s) per run, "
                   f"torch {torch.__version__}",
        "minutes": round(total / 60, 1),
        "preset": dataclasses.asdict(base),
        "variants": VARIANTS, "runs": runs, "summary": summary(runs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
