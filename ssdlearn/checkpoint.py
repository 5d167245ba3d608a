"""Checkpoints: an atomic save, an exact resume, a trained model back from disk. Lesson 07.

A training checkpoint holds the model's and the optimizer's state, the grad scaler's, the
step and the config (a plain dict), so ``train(..., resume=path)`` continues exactly where
the run stopped. :func:`export_weights` keeps only what inference needs. Every load uses
``torch.load(weights_only=True)``: tensors and plain Python, never arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig, build_model

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "config_from_checkpoint",
    "load_model",
    "export_weights",
]


def save_checkpoint(path: str | Path, **state) -> None:
    """Write atomically: to a temporary file in the same folder, flushed, then renamed over
    the old checkpoint. A crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain Python only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable ssdlearn checkpoint: {error}") from error


def config_from_checkpoint(checkpoint: dict) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint was written with."""
    if "config" not in checkpoint:
        raise ValueError("the checkpoint has no 'config': not written by ssdlearn.train")
    return TrainConfig(**checkpoint["config"])


def load_model(path: str | Path,
               device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained network of a checkpoint, in eval mode, and the config it was trained with.

    Works on full training checkpoints and on :func:`export_weights` files. The backbone is
    never downloaded again: the checkpoint holds every weight.
    """
    checkpoint = load_checkpoint(path, map_location=device)
    config = config_from_checkpoint(checkpoint)
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{path} does not hold weights for {config.model} with "
                         f"{config.num_classes} classes: {error}") from error
    return model.to(device).eval(), config


def export_weights(checkpoint_path: str | Path, out: str | Path, half: bool = False) -> None:
    """Keep only what inference needs (weights, config, step): half the size of a
    training checkpoint, which also holds the optimizer's momentum. ``half`` stores the
    floating-point weights as float16, half the size again (:func:`load_model` copies them
    into the float32 network). The default boxes and the input normalization stay float32:
    rounded, they would move every detection a little."""
    checkpoint = load_checkpoint(checkpoint_path)
    weights = checkpoint["model"]
    if half:
        exact = ("priors", "image_mean", "image_std")
        weights = {k: v.half() if v.is_floating_point() and not k.endswith(exact) else v
                   for k, v in weights.items()}
    save_checkpoint(out, model=weights, config=checkpoint["config"], step=checkpoint["step"])
