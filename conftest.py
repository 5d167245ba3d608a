"""pytest setup shared by the unit tests and the lessons.

Threads. ``pytest -n N`` (pytest-xdist; the project's ``addopts`` say ``-n auto --dist
loadscope``) runs N worker processes; a lesson or a test module stays whole in one worker
(nbval runs a notebook's cells in order in one kernel). Each worker gets ``cores // N``
torch threads, and so do the processes it starts (lesson kernels, DDP ranks), so that
workers never wait for one another's cores.

Lesson kernels. The stored outputs of a lesson must hold on every CPU. Each lesson
therefore runs, under strict nbval, in a kernel that computes differently from the
machine that wrote its outputs: ATen's scalar kernels instead of its AVX2/AVX-512 ones
(other summation orders in every reduction) and oneDNN limited to SSE4.1 (other
convolution and matmul code paths), on the worker's thread count. ``--lesson-kernels
native`` runs them on this CPU's own kernels instead.
"""

from __future__ import annotations

import os

import pytest

OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lesson-kernels", choices=("other", "native"), default="other",
        help="CPU kernels for the lessons' Jupyter kernels: 'other' (scalar ATen, SSE4.1 "
             "oneDNN; the default) or 'native' (this CPU's own)")


def _threads_per_worker() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return  # the controller of `-n N`, or a plain run: torch's own default
    threads = str(_threads_per_worker())
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Start a lesson's kernel (nbval does it in the setup of the notebook's first cell)
    with the other kernels in its environment; the test process keeps its own."""
    lesson = item.path.suffix == ".ipynb"
    other = lesson and item.config.getoption("--lesson-kernels") == "other"
    saved = {name: os.environ.get(name) for name in OTHER_KERNELS}
    if other:
        os.environ.update(OTHER_KERNELS)
    try:
        yield
    finally:
        if other:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
