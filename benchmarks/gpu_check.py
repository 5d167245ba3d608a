"""The GPU check: SSD300-VGG16 in ssdlearn and in torchvision on one GPU, in one table.

    python benchmarks/gpu_check.py                 # on a CUDA machine: a few minutes
    python benchmarks/gpu_check.py --smoke         # tiny stand-ins on the CPU (CI), seconds

Rows (same GPU, same batch, same synthetic images and boxes for both libraries):

- training images/s and peak memory: fp32, fp32 + channels_last, AMP bf16, bf16 +
  channels_last, and bf16 + channels_last + ``torch.compile`` of the network (backbone and
  heads; matching and loss stay eager in both). ssdlearn runs ``ssdlearn.train.train_step``
  (batched matching, encoding, MultiBox loss, SGD); torchvision runs its ``SSD`` in training
  mode (per-image matching and loss) and the same SGD.
- inference frames/s at batch 1 and 8, network and postprocessing (decode, threshold, top
  400 per class, NMS, top 200): ``model(images)`` + ``detect`` for ssdlearn, ``model(images)``
  for torchvision. The paper: 46 FPS at batch 1 and 59 at batch 8 on a Titan X (Table 7).
- the training targets (``benchmarks/targets.py``) and the postprocessing
  (``benchmarks/postprocess.py``) alone, as time ratios torchvision / ssdlearn.

Both networks hold the same weights: the ssdlearn one is ``from_torchvision`` of the
torchvision one (random weights; no download), with class heads scaled so that a few
percent of (box, class) pairs pass the 0.01 threshold, as for a trained model. Speed-ups
are ssdlearn / torchvision for rates and torchvision / ssdlearn for times: > 1 means
ssdlearn is faster.

``--smoke`` (and any run without CUDA) uses a small SSD on 64x64 images for both
libraries (ssdlearn's ``ssd_tiny``; torchvision's ``SSD`` class on the same backbone), one
step per row, and no ``torch.compile``: it checks that every row runs, not how fast.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks
import postprocess  # noqa: E402
import targets  # noqa: E402

from ssdlearn.detect import detect  # noqa: E402
from ssdlearn.loss import MultiBoxLoss  # noqa: E402
from ssdlearn.train import train_step  # noqa: E402

NUM_CLASSES = 21


@dataclass
class Sizes:
    batch: int
    train_steps: int
    train_warmup: int
    infer_iterations: int
    infer_warmup: int
    infer_batches: tuple[int, ...]
    repeats: int  # targets and postprocess
    compile: bool


FULL = Sizes(batch=32, train_steps=20, train_warmup=5, infer_iterations=30, infer_warmup=5,
             infer_batches=(1, 8), repeats=20, compile=True)  # fmt: skip
SMOKE = Sizes(batch=2, train_steps=1, train_warmup=0, infer_iterations=1, infer_warmup=0,
              infer_batches=(1, 2), repeats=1, compile=False)  # fmt: skip


# ---- the two models ------------------------------------------------------------------------


def ssd300_pair(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """torchvision's ssd300_vgg16 and its ssdlearn conversion: the same weights."""
    from torchvision.models.detection import ssd300_vgg16

    from ssdlearn.export import from_torchvision

    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    with torch.no_grad():  # scores of a trained model: mostly background, some objects
        for conv in tv.head.classification_head.module_list:
            conv.weight.mul_(0.1)
            conv.bias[0::NUM_CLASSES] += 6.0  # channel a * C + 0: background of box a
        for conv in tv.head.regression_head.module_list:
            conv.weight.mul_(0.3)
    ours = from_torchvision(tv)
    return ours.to(device), tv.to(device)


class _Maps(nn.Module):
    """ssdlearn's tiny backbone as torchvision's SSD wants it: an OrderedDict of maps."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.out_channels = features.channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict((str(i), m) for i, m in enumerate(self.features(x)))


def tiny_pair(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """ssdlearn's ssd_tiny at 64x64 (width 8), and torchvision's SSD on the same backbone."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD as TorchvisionSSD

    from ssdlearn.anchors import paper_scales
    from ssdlearn.model import TinyFeatures, ssd_tiny

    torch.manual_seed(0)
    ours = ssd_tiny(NUM_CLASSES, 64, width=8)  # width 8: the code paths, at little cost
    anchors = DefaultBoxGenerator([[2, 3, 4]] * 5, scales=paper_scales(6, 0.1, 0.9))
    tv = TorchvisionSSD(_Maps(TinyFeatures(width=8)), anchors, (64, 64), NUM_CLASSES,
                        image_mean=[0.5] * 3, image_std=[0.5] * 3)  # fmt: skip
    return ours.to(device), tv.to(device)


# ---- measuring -----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[], object], items: int, steps: int, warmup: int,
         device: torch.device) -> tuple[float, float]:  # fmt: skip
    """(items per second over ``steps`` timed calls, peak GiB allocated; nan on a CPU)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    cuda = device.type == "cuda"
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return items * steps / seconds, peak


def synthetic_batch(batch: int, side: int, device: torch.device, objects: int = 8):
    """Images in [0, 1], and 1..objects random boxes per image: padded (ssdlearn) and per
    image in pixels (torchvision)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, side, side, generator=generator)
    per_image = targets.make_batch(batch, objects, generator)
    gt_boxes, gt_labels = targets.pad(per_image, device)
    tv_targets = [{"boxes": (boxes * side).to(device), "labels": labels.to(device)}
                  for boxes, labels in per_image]  # fmt: skip
    return images.to(device), gt_boxes, gt_labels, tv_targets


def train_rate(library: str, model: nn.Module, data, amp: bool, channels_last: bool,
               compiled: bool, sizes: Sizes, device: torch.device) -> tuple[float, float]:
    """Training images/s and peak GiB of one configuration (weights restored afterwards)."""
    images, gt_boxes, gt_labels, tv_targets = data
    state = {k: v.clone() for k, v in model.state_dict().items()}
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.train().to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    amp_dtype = torch.bfloat16 if amp else None
    if library == "ssdlearn":
        network = torch.compile(model) if compiled else model
        images = images.contiguous(memory_format=memory_format)
        scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no scaler
        loss_fn = MultiBoxLoss()

        def step():
            train_step(network, loss_fn, optimizer, scaler, images, gt_boxes, gt_labels,
                       model.priors, amp_dtype)  # fmt: skip
    else:
        originals = model.backbone, model.head
        if compiled:  # the network only, as for ssdlearn; matching and loss stay eager
            model.backbone, model.head = torch.compile(model.backbone), torch.compile(model.head)
        image_list = list(images)

        def step():
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp):
                losses = model(image_list, tv_targets)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
    try:
        return rate(step, len(images), sizes.train_steps,
                    sizes.train_warmup + (3 if compiled else 0), device)  # fmt: skip
    finally:
        if library != "ssdlearn":
            model.backbone, model.head = originals
        model.to(memory_format=torch.contiguous_format).load_state_dict(state)
        optimizer.state.clear()  # the momentum buffers: one model's worth of memory
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


@torch.no_grad()
def infer_rate(library: str, model: nn.Module, batch: int, side: int, amp: bool,
               sizes: Sizes, device: torch.device) -> float:  # fmt: skip
    """Frames/s of network + postprocessing at this batch (torchvision: its transform too)."""
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
    images = images.to(device)
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    if library == "ssdlearn":
        def step():
            with autocast:
                loc, conf = model(images)
            return detect(loc.float(), conf.float(), model.priors, pre_nms_top_k=400, clip=True)
    else:
        image_list = list(images)

        def step():
            with autocast:
                return model(image_list)
    return rate(step, batch, sizes.infer_iterations, sizes.infer_warmup, device)[0]


def component_ratios(sizes: Sizes, device: torch.device) -> list[tuple[str, float, float]]:
    """(row, ssdlearn ms, torchvision ms) of the targets and the postprocessing alone."""
    from torchvision.models.detection._utils import BoxCoder, SSDMatcher

    from ssdlearn.anchors import SSD300_VOC, default_boxes
    from ssdlearn.boxes import cxcywh_to_xyxy

    cuda = device.type == "cuda"
    priors = default_boxes(SSD300_VOC, device=device)
    priors_xyxy = cxcywh_to_xyxy(priors)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    generator = torch.Generator().manual_seed(0)
    images = targets.make_batch(sizes.batch, 10, generator)
    gt_boxes, gt_labels = targets.pad(images, device)
    images = [(b.to(device), lab.to(device)) for b, lab in images]
    t_ours, t_tv = targets.median_seconds(
        [lambda: targets.ssdlearn_targets(gt_boxes, gt_labels, priors),
         lambda: targets.torchvision_targets(images, priors_xyxy, SSDMatcher(0.5), coder)],
        sizes.repeats, 1, cuda,
    )  # fmt: skip
    rows = [(f"targets, batch {sizes.batch} (ms)", t_ours * 1e3, t_tv * 1e3)]
    loc, conf = postprocess.make_outputs(sizes.batch, len(priors), NUM_CLASSES, 7.5, generator)
    loc, conf = loc.to(device), conf.to(device)
    p_ours, p_tv = targets.median_seconds(
        [lambda: detect(loc, conf, priors, pre_nms_top_k=400, clip=True),
         lambda: postprocess.torchvision_postprocess(loc, conf, priors_xyxy, coder)],
        sizes.repeats, 1, cuda,
    )  # fmt: skip
    rows.append((f"postprocess, batch {sizes.batch} (ms)", p_ours * 1e3, p_tv * 1e3))
    return rows


# ---- the table -----------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # nan -> "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny stand-ins on the CPU, one step per row (automatic without "
                             "CUDA)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 32)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    smoke = args.smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if smoke else "cuda")
    sizes = SMOKE if smoke else FULL
    if args.batch:
        sizes.batch = args.batch
    if args.no_compile:
        sizes.compile = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    ours, tv = tiny_pair(device) if smoke else ssd300_pair(device)
    side = ours.image_size[0]
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU, SMOKE: tiny stand-ins at 64x64, one step per row; not SSD300 figures")
    print(f"{name}; torch {torch.__version__}; {'ssd_tiny' if smoke else 'SSD300-VGG16'}, "
          f"{NUM_CLASSES} classes, training batch {sizes.batch}")

    rows: list[tuple[str, str, str, str, str]] = []
    data = synthetic_batch(sizes.batch, side, device)
    configs = [("fp32", False, False, False), ("fp32 channels_last", False, True, False),
               ("bf16", True, False, False), ("bf16 channels_last", True, True, False)]
    if sizes.compile:
        configs.append(("bf16 channels_last compile", True, True, True))
    for label, amp, channels_last, compiled in configs:
        results = []
        for library, model in (("ssdlearn", ours), ("torchvision", tv)):
            try:
                results.append(train_rate(library, model, data, amp, channels_last, compiled,
                                          sizes, device))  # fmt: skip
            except Exception as error:  # a failed compile is a result, not the end
                print(f"  {library} {label}: {type(error).__name__}: {str(error)[:200]}")
                results.append((float("nan"), float("nan")))
        (r_ours, m_ours), (r_tv, m_tv) = results
        rows.append((f"train img/s, {label}", fmt(r_ours), fmt(r_tv), fmt(r_ours / r_tv, 2),
                     f"{fmt(m_ours, 2)} / {fmt(m_tv, 2)}"))  # fmt: skip
    for amp in (False, True):
        for batch in sizes.infer_batches:
            label = f"infer FPS, batch {batch}, {'bf16' if amp else 'fp32'}"
            f_ours = infer_rate("ssdlearn", ours, batch, side, amp, sizes, device)
            f_tv = infer_rate("torchvision", tv, batch, side, amp, sizes, device)
            rows.append((label, fmt(f_ours), fmt(f_tv), fmt(f_ours / f_tv, 2), ""))
    for label, t_ours, t_tv in component_ratios(sizes, device):
        rows.append((label, fmt(t_ours, 2), fmt(t_tv, 2), fmt(t_tv / t_ours, 2), ""))

    header = ("measure", "ssdlearn", "torchvision", "speed-up", "peak GiB ours / tv")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + row[0].ljust(widths[0]) + " | "
              + " | ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:])) + " |")
    print("speed-up > 1: ssdlearn faster. Paper (Titan X, Caffe): 46 FPS at batch 1, 59 at "
          f"batch 8. Whole check: {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
