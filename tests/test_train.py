import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssdlearn.checkpoint import export_weights, load_checkpoint, load_model, save_checkpoint
from ssdlearn.cli import train_main as main
from ssdlearn.config import CONFIGS, TrainConfig, build_model
from ssdlearn.data import ShapesDataset, collate_detection
from ssdlearn.data.loader import EpochBatchSampler
from ssdlearn.loss import MultiBoxLoss
from ssdlearn.train import (
    NonFiniteLossError,
    build_optimizer,
    learning_rate,
    train,
    train_step,
    warmup_step_lr,
)

# A run small enough for a test: 64x64 images, batch 8, no worker processes.
SMALL = dataclasses.replace(
    CONFIGS["shapes"], image_size=64, small_fraction=0.0, train_images=64, val_images=8,
    batch_size=8, steps=6, warmup_steps=2, lr=0.01, lr_milestones=(4,), workers=0, log_every=2,
    eval_every=1000, checkpoint_every=3, max_minutes=None, device="cpu",
)  # fmt: skip


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    config = dataclasses.replace(SMALL, augment=False)
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, targets = collate_detection([ShapesDataset(8, 64, seed=1)[i] for i in range(8)])
    losses = []
    for _ in range(15):
        values = train_step(model, MultiBoxLoss(), optimizer, scaler, images, targets["boxes"],
                            targets["labels"], model.priors, None)
        losses.append(values[0].item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_writes_log_checkpoint_and_metrics(tmp_path):
    config = dataclasses.replace(SMALL, eval_every=6)
    result = train(config, tmp_path, progress=False)
    assert result["steps"] == 6 and 0 <= result["map"] <= 1 and 0 <= result["map_50"] <= 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["map_50"] == result["map_50"]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,loss") and len(rows) == 1 + 3
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 6 and checkpoint["config"]["image_size"] == 64


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    config = dataclasses.replace(SMALL, augment=True)  # the resumed augmentation must match too
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "stopped", progress=False, stop_after=3)
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["step"] == 3
    train(config, tmp_path / "stopped", progress=False, resume="auto")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert b["step"] == 6
    assert state_equal(a["model"], b["model"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key in a["optimizer"]["state"]:
        assert state_equal(a["optimizer"]["state"][key], b["optimizer"]["state"][key]), key
    # log.csv: the same steps as the uninterrupted run, none twice.
    steps = [row.split(",")[0] for row in (tmp_path / "stopped" / "log.csv").read_text()
             .splitlines()[1:]]
    assert steps == ["2", "4", "6"]


def test_resume_drops_log_rows_written_after_the_checkpoint(tmp_path):
    config = dataclasses.replace(SMALL, checkpoint_every=3, log_every=1)
    train(config, tmp_path, progress=False, stop_after=5)  # checkpoint at 3, rows 1..5
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    train(config, tmp_path, progress=False, resume="auto")
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,loss")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_resume_across_a_grad_scaler_change(tmp_path, monkeypatch):
    import ssdlearn.train as train_module

    config = dataclasses.replace(SMALL, steps=9, lr_milestones=(7,))
    # A CPU run (no scaler) saves an empty scaler state ...
    train(config, tmp_path, progress=False, stop_after=3)
    assert load_checkpoint(tmp_path / "last.pt")["scaler"] == {}
    # ... and resuming with fp16 (a scaler) starts a fresh scale instead of failing on it.
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device, enabled: torch.float16)
    assert train(config, tmp_path, progress=False, resume="auto", stop_after=3)["steps"] == 6
    fp16 = load_checkpoint(tmp_path / "last.pt")
    assert fp16["step"] == 6 and fp16["scaler"]["scale"] > 0  # an fp16 run saves its scale
    # Back to no scaler (bf16 / CPU): the fp16 scale is not needed and not loaded.
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device, enabled: None)
    assert train(config, tmp_path, progress=False, resume="auto")["steps"] == 9
    assert load_checkpoint(tmp_path / "last.pt")["scaler"] == {}


def test_load_scaler_only_when_both_runs_have_one():
    from ssdlearn.train import _load_scaler

    enabled = torch.amp.GradScaler("cpu", init_scale=8.0, enabled=True)
    _load_scaler(enabled, {})  # a CPU/bf16 checkpoint: nothing to load
    assert enabled.get_scale() == 8.0
    saved = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=True)
    _load_scaler(enabled, saved.state_dict())
    assert enabled.get_scale() == 2.0 ** 10
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    _load_scaler(disabled, saved.state_dict())  # an fp16 checkpoint in a bf16 run
    assert disabled.state_dict() == {}


def test_batch_size_is_the_global_batch(tmp_path):
    from ssdlearn.data.loader import per_process_batch

    assert per_process_batch(32, 4) == 8 and per_process_batch(32, 1) == 32
    with pytest.raises(ValueError, match="multiple of 3"):
        per_process_batch(32, 3)


def test_training_drops_crowd_regions():
    from ssdlearn.data.loader import AugmentedDataset, drop_crowd

    target = {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]),
              "labels": torch.tensor([1, 2]), "iscrowd": torch.tensor([False, True]),
              "area": torch.tensor([10.0, 99.0]), "size": torch.tensor([2, 2]),
              "image_id": 7}
    kept = drop_crowd(target)
    assert kept["labels"].tolist() == [1] and kept["area"].tolist() == [10.0]
    assert kept["iscrowd"].tolist() == [False] and kept["size"].tolist() == [2, 2]
    dataset = AugmentedDataset([(torch.zeros(3, 8, 8), target)],
                               lambda image, t, generator: (image, t), seed=0)
    assert dataset[(0, 0)][1]["labels"].tolist() == [1]


def test_backbone_download_failure_says_what_to_do(monkeypatch):
    import urllib.error

    import ssdlearn.model as model_module

    def offline(weights):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(model_module, "_backbone_state_dict", offline)
    with pytest.raises(OSError, match="--backbone-weights none"):
        build_model(CONFIGS["voc_ssd300"])


class PoisonedShapes(ShapesDataset):
    """Shapes, but image 5 holds a NaN: the kind of batch the guard must catch."""

    def generate(self, index):
        image, target = super().generate(index)
        if index == 5:
            image[0, 0, 0] = float("nan")
        return image, target


def test_nan_guard_stops_and_names_the_step(tmp_path):
    config = dataclasses.replace(SMALL, augment=False, train_images=8, steps=10)
    datasets = (PoisonedShapes(8, 64, seed=0), ShapesDataset(8, 64, seed=1))
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at step 0 "):
        train(config, tmp_path, progress=False, datasets=datasets)


def test_a_killed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, step=1, model={"w": torch.ones(3)})

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, step=2, model={"w": torch.zeros(3)})
    checkpoint = load_checkpoint(path)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable ssdlearn checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_learning_rate_schedule():
    config = dataclasses.replace(SMALL, lr=0.1, warmup_steps=4, lr_milestones=(10, 20))
    assert [round(learning_rate(s, config), 4) for s in (0, 3, 4, 9, 10, 19, 20)] == [
        0.025, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001]


def test_sampler_resumes_and_splits_batches_between_ranks():
    full = EpochBatchSampler(20, 4, seed=3)
    batches = [b for b, _ in zip(full, range(12))]  # 5 batches per epoch: crosses 2 epochs
    assert [i for _, i in batches[0]] != [i for _, i in batches[5]]
    assert batches[5][0][0] == 1  # the second epoch is marked as such
    resumed = EpochBatchSampler(20, 4, seed=3, start_step=7)
    assert next(iter(resumed)) == batches[7]
    rank0 = next(iter(EpochBatchSampler(20, 2, seed=3, world_size=2, rank=0)))
    rank1 = next(iter(EpochBatchSampler(20, 2, seed=3, world_size=2, rank=1)))
    assert rank0 + rank1 == batches[0]
    with pytest.raises(ValueError, match="smaller than one global batch"):
        EpochBatchSampler(3, 4, seed=0)


def test_config_validation():
    with pytest.raises(ValueError, match="num_classes must include the background"):
        TrainConfig(num_classes=1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(TrainConfig(model="yolo"))


def test_command_line(tmp_path, capsys):
    main(["--config", "shapes", "--out", str(tmp_path), "--image-size", "64", "--steps", "2",
          "--small-fraction", "0", "--train-images", "16", "--val-images", "4",
          "--batch-size", "4", "--workers", "0", "--eval-every", "2", "--log-every", "1",
          "--device", "cpu", "--no-progress", "--max-minutes", "none", "--lr-milestones", "1",
          "--width", "16", "--aspect-ratios", "4", "--scale-range", "0.07,0.9"])
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and "map_50" in result
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["lr_milestones"] == [1]
    assert (saved["width"], saved["aspect_ratios"], saved["scale_range"]) == (16, [4], [0.07, 0.9])
    # The checkpoint rebuilds the same network: 4 boxes per cell, the finest at 0.07 x 64.
    model, _ = load_model(tmp_path / "last.pt")
    assert model.priors.shape[0] == 4 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert float(model.priors[:, 2:].prod(dim=1).min()) == pytest.approx(0.07**2)
    with pytest.raises(SystemExit):
        main(["--config", "nope"])


# ---- distributed: 2 CPU processes with gloo ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gradients(model, images, targets, world_size):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # gradients only, weights fixed
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_step(model, MultiBoxLoss(), optimizer, scaler, images, targets["boxes"],
               targets["labels"], model.module.priors if world_size > 1 else model.priors,
               None, world_size=world_size)


def _ddp_worker(rank, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL)).eval()  # eval: BatchNorm per image
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    images, targets = collate_detection([ShapesDataset(4, 64, seed=1)[i] for i in range(4)])
    half = slice(2 * rank, 2 * rank + 2)
    local = {k: v[half] for k, v in targets.items() if k in ("boxes", "labels")}
    _gradients(ddp, images[half], local, world_size=2)
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, path)
    dist.destroy_process_group()


def test_ddp_two_processes_match_one_process_gradients(tmp_path):
    path = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(_free_port(), str(path)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL)).eval()
    images, targets = collate_detection([ShapesDataset(4, 64, seed=1)[i] for i in range(4)])
    _gradients(model, images, targets, world_size=1)
    ddp_grads = torch.load(path, weights_only=True)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], parameter.grad, rtol=1e-4, atol=1e-6)


def test_export_and_load_model(tmp_path):

    train(dataclasses.replace(SMALL, steps=2), tmp_path, progress=False)
    export_weights(tmp_path / "last.pt", tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size < (tmp_path / "last.pt").stat().st_size
    model, config = load_model(tmp_path / "model.pt")
    assert not model.training and config.image_size == 64
    trained = load_checkpoint(tmp_path / "last.pt")["model"]
    assert state_equal(model.state_dict(), trained)
    wrong = load_checkpoint(tmp_path / "model.pt")
    wrong["config"]["num_classes"] = 9
    save_checkpoint(tmp_path / "wrong.pt", **wrong)
    with pytest.raises(ValueError, match="does not hold weights for ssd_tiny with 9 classes"):
        load_model(tmp_path / "wrong.pt")
    export_weights(tmp_path / "last.pt", tmp_path / "half.pt", half=True)
    half = load_checkpoint(tmp_path / "half.pt")["model"]
    assert half["priors"].dtype == torch.float32 and torch.equal(half["priors"], trained["priors"])
    assert {v.dtype for k, v in half.items() if k.endswith("weight")} == {torch.float16}
    small, _ = load_model(tmp_path / "half.pt")
    for name, value in small.state_dict().items():
        assert value.dtype == trained[name].dtype
        torch.testing.assert_close(value, trained[name], rtol=1e-3, atol=1e-4)


def test_lessons_import_these_from_ssdlearn_train():
    """Lessons 00, 07 and 08 import these names from ssdlearn.train."""
    import ssdlearn.train

    for name in ("CONFIGS", "build_datasets", "evaluate", "learning_rate", "load_checkpoint",
                 "load_model", "train", "train_step"):
        assert name in ssdlearn.train.__all__ and hasattr(ssdlearn.train, name)


def test_learning_rate_is_the_plain_schedule():
    config = dataclasses.replace(TrainConfig(), lr=0.02, warmup_steps=10,
                                 lr_milestones=(30, 45), lr_gamma=0.5)
    for step in (0, 9, 10, 29, 30, 44, 45, 100):
        assert learning_rate(step, config) == warmup_step_lr(step, 0.02, 10, (30, 45), 0.5)
    assert warmup_step_lr(0, 0.02, 10, (30,), 0.5) == 0.02 / 10
    assert warmup_step_lr(30, 0.02, 10, (30,), 0.5) == 0.01
