"""Full float32 matmuls for the road."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def full_fp32():
    """Matmuls in full float32 while the road runs: a caller (or the encoder's
    runtime) may allow TF32 for speed, whose ~1e-3 rounding would move distances and
    resized pixels past the stated tolerance. The setting is restored afterwards."""
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(was)
