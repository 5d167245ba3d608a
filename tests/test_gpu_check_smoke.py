"""benchmarks/gpu_check.py runs end to end on the CPU (--smoke), so the GPU check does not
rot between the runs on a GPU machine."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_the_cpu():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "SMOKE" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[1].strip() == "measure"
    names = [row.split("|")[1].strip() for row in rows[1:]]
    for expected in ("train img/s, fp32", "train img/s, bf16 channels_last",
                     "infer FPS, batch 1, fp32", "infer FPS, batch 2, bf16",
                     "targets, batch 2 (ms)", "postprocess, batch 2 (ms)"):  # fmt: skip
        assert expected in names, out
    for row in rows[1:]:  # every cell measured: a number, never a failure's "-"
        for cell in row.split("|")[2:5]:
            assert float(cell) >= 0, row
