"""Training throughput of SSD300-VGG16 on a GPU: images per second and peak memory.

    python benchmarks/gpu_throughput.py                  # batch 32, AMP on and off
    python benchmarks/gpu_throughput.py --model ssd512_vgg16 --batch 16 --compile

Runs ``ssdlearn.train.train_step`` (matching, encoding, forward, MultiBox loss, backward,
SGD) on random images with random objects already on the GPU, so the number measures the
model and the loss, not the data pipeline. Prints the median step time over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssdlearn.loss import MultiBoxLoss
from ssdlearn.train import TrainConfig, autocast_dtype, build_model, build_optimizer, train_step


def random_targets(batch: int, objects: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(batch, objects, 2, 2, generator=generator).sort(dim=2).values
    boxes = torch.cat([corners[:, :, 0], corners[:, :, 1] + 0.05], dim=-1).clamp(max=1)
    labels = torch.randint(1, 21, (batch, objects), generator=generator)
    return boxes.to(device), labels.to(device)


def measure(model_name: str, batch: int, amp: bool, channels_last: bool, compile_model: bool,
            steps: int, warmup: int, device: torch.device) -> dict:
    config = TrainConfig(model=model_name, dataset="voc", num_classes=21, amp=amp,
                         image_size=512 if "512" in model_name else 300)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if compile_model else model
    optimizer = build_optimizer(model, config)
    amp_dtype = autocast_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    images = torch.rand(batch, 3, *model.image_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    boxes, labels = random_targets(batch, 8, device)
    times = []
    torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(forward, MultiBoxLoss(), optimizer, scaler, images, boxes, labels,
                   model.priors, amp_dtype)
        torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"images_per_second": batch / median, "step_ms": 1000 * median,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ssd300_vgg16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU training throughput")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.model}, "
          f"batch {args.batch}, median of {args.steps} steps\n")
    print(f"{'AMP':<10} {'channels_last':<14} {'img/s':>8} {'ms/step':>8} {'peak GiB':>9}")
    for amp in (False, True):
        for channels_last in (False, True):
            r = measure(args.model, args.batch, amp, channels_last, args.compile, args.steps,
                        args.warmup, device)
            print(f"{r['amp']:<10} {str(channels_last):<14} {r['images_per_second']:>8.1f} "
                  f"{r['step_ms']:>8.1f} {r['peak_memory_gib']:>9.2f}")


if __name__ == "__main__":
    main()
