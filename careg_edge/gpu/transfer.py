"""Host arrays onto the device."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def upload(a, device) -> torch.Tensor:
    """A NumPy array (or a tensor) as a tensor on `device`, without a host copy when it
    is contiguous. Read-only arrays (decoded frames, memory-mapped files) are only read
    from, so torch's warning about non-writable arrays does not apply."""
    if isinstance(a, torch.Tensor):
        return a.to(device)
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        return torch.from_numpy(a).to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a).to(device)
