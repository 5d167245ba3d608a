"""Two-process (gloo, CPU) runs of ``train()``: every decision to stop is taken by all ranks.

Each test spawns its processes itself and gives them a deadline, so a hang fails the test
instead of freezing the suite.
"""

import dataclasses
import os
import socket
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssdlearn.config import CONFIGS

pytestmark = pytest.mark.slow

# Tiny: 64x64 shapes, a global batch of 4 (2 per process), evaluation on 4 images.
TINY = dataclasses.replace(
    CONFIGS["shapes"], image_size=64, small_fraction=0.0, train_images=64, val_images=4,
    batch_size=4, steps=40, warmup_steps=1, lr_milestones=(30,), workers=0, log_every=2,
    eval_every=1000, checkpoint_every=1000, max_minutes=None, device="cpu",
)  # fmt: skip
DEADLINE = 180  # seconds for the whole two-process run, process start included


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, case: str, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from ssdlearn import train as train_module

    config = TINY
    if case == "clock" and rank == 0:
        # Only rank 0's clock runs out (rank 1 would go on to step 40 alone).
        config = dataclasses.replace(TINY, max_minutes=1e-6)
    if case == "nan" and rank == 1:
        real_step = train_module.train_step

        def poisoned(*args, **kwargs):  # rank 1's loss turns NaN from the 3rd step on
            values = real_step(*args, **kwargs)
            poisoned.calls += 1
            return values * float("nan") if poisoned.calls >= 3 else values

        poisoned.calls = 0
        train_module.train_step = poisoned
    try:
        result = train_module.train(config, out, progress=False)
        queue.put((rank, "ok", result["steps"]))
    except Exception as error:
        queue.put((rank, type(error).__name__, str(error) or traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def _run_two(tmp_path, case: str) -> tuple[dict, float]:
    """Start two ranks; {rank: (outcome, detail)} and the seconds they took. Fails (and
    kills them) if they do not both finish within DEADLINE."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    start = time.perf_counter()
    processes = [context.Process(target=_worker, args=(rank, port, str(tmp_path), case, queue))
                 for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    try:
        while len(results) < 2:
            left = DEADLINE - (time.perf_counter() - start)
            if left <= 0:
                pytest.fail(f"{case}: ranks {sorted({0, 1} - set(results))} did not finish "
                            f"within {DEADLINE} s (a hang); finished: {results}")
            try:
                rank, outcome, detail = queue.get(timeout=min(left, 5))
            except Exception:  # queue.Empty: keep waiting until the deadline
                continue
            results[rank] = (outcome, detail)
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    return results, time.perf_counter() - start


def test_one_ranks_clock_stops_both_ranks_at_the_same_step(tmp_path):
    results, seconds = _run_two(tmp_path, "clock")
    assert results[0][0] == "ok" and results[1][0] == "ok", results
    # Both stop at the first decision (step 2, the first log step), together.
    assert results[0][1] == results[1][1] == 2, results
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    print(f"clock: both ranks stopped at step 2 in {seconds:.1f} s")


def test_nan_on_one_rank_stops_both_with_a_clear_error(tmp_path):
    results, seconds = _run_two(tmp_path, "nan")
    assert results[0][0] == results[1][0] == "NonFiniteLossError", results
    for rank in (0, 1):
        assert "NaN or infinite at step 2 in one of 2 processes" in results[rank][1], results
    assert "(this one)" in results[1][1] and "(another one)" in results[0][1]
    print(f"nan: both ranks raised NonFiniteLossError in {seconds:.1f} s")
