"""Training checkpoints: careg_edge.container kind "careg-checkpoint" version 1.

Tensors: the encoder state dict under its own names (trunk.*, stn.*), the
registration head under head.*, and, for resuming, SGD momentum buffers under
optim.<parameter name>. Metadata (strings): `config` (JSON: backbone, stn_mode,
input_size, training config, progress), `encoder_meta` (JSON of EncoderMeta)
and `encoder_hash` (also inside encoder_meta; flat so other readers need no
JSON). On load the encoder is rebuilt from `config`, loaded strictly and its
hash recomputed: a file whose tensors do not match its own description is
refused with one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..container import metadata_json, read_container, write_container
from ..errors import BadHeader, ChecksumMismatch
from ..encoder_meta import EncoderMeta
from .careg import CARegEncoder

KIND, VERSION = "careg-checkpoint", 1


@dataclass
class Checkpoint:
    encoder: CARegEncoder
    config: dict
    meta: EncoderMeta
    head_state: Dict[str, torch.Tensor] = field(default_factory=dict)
    optim_state: Dict[str, torch.Tensor] = field(default_factory=dict)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def save(path, encoder: CARegEncoder, config: dict, head: Optional[torch.nn.Module] = None,
         optim_state: Optional[Dict[str, torch.Tensor]] = None) -> EncoderMeta:
    """Write atomically; returns the EncoderMeta stored with it."""
    config = dict(config, backbone=encoder.backbone_name, stn_mode=encoder.stn_mode,
                  input_size=list(encoder.input_size), trained=encoder.trained)
    meta = encoder.meta(extra={"checkpoint": Path(path).name})
    tensors = {k: _np(v) for k, v in encoder.state_dict().items()}
    if head is not None:
        tensors.update({f"head.{k}": _np(v) for k, v in head.state_dict().items()})
    for k, v in (optim_state or {}).items():
        tensors[f"optim.{k}"] = _np(v)
    write_container(path, tensors, {"config": json.dumps(config, sort_keys=True),
                                    "encoder_meta": json.dumps(meta.to_dict(), sort_keys=True),
                                    "encoder_hash": meta.encoder_hash}, KIND, VERSION)
    return meta


def load(path) -> Checkpoint:
    """Read, rebuild and verify a checkpoint (CaregError subclasses on any problem)."""
    where = str(path)
    tensors, meta_raw = read_container(path, KIND, VERSION)
    config = metadata_json(meta_raw, "config", where)
    meta = EncoderMeta.from_dict(metadata_json(meta_raw, "encoder_meta", where))
    try:
        encoder = CARegEncoder(config["backbone"], config["stn_mode"], weights=None,
                               input_size=tuple(config["input_size"]),
                               trained=bool(config.get("trained", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise BadHeader(f"{where}: checkpoint config is incomplete ({e})") from None
    enc_sd = {k: torch.from_numpy(v) for k, v in tensors.items()
              if not k.startswith(("head.", "optim."))}
    own = encoder.state_dict()
    enc_sd = {k: _scalar_fix(k, v) for k, v in enc_sd.items()}
    bad = sorted(set(own) ^ set(enc_sd)) or [k for k in own if own[k].shape != enc_sd[k].shape]
    if bad:
        raise BadHeader(f"{where}: tensors do not fit a {config['backbone']}/{config['stn_mode']} "
                        f"encoder (first mismatch: {bad[0]}); the file is from another architecture")
    encoder.load_state_dict(enc_sd, strict=True)
    if encoder.encoder_hash() != meta.encoder_hash:
        raise ChecksumMismatch(f"{where}: encoder hash does not match the stored one; "
                               "the checkpoint is corrupt, write it again")
    return Checkpoint(
        encoder=encoder.eval(), config=config, meta=meta,
        head_state={k[5:]: _scalar_fix(k, torch.from_numpy(v)) for k, v in tensors.items()
                    if k.startswith("head.")},
        optim_state={k[6:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("optim.")})


def _scalar_fix(name: str, t: torch.Tensor) -> torch.Tensor:
    """BN batch counters are 0-d in torch but stored as [1] by the container."""
    return t.reshape(()) if name.endswith("num_batches_tracked") and t.numel() == 1 else t
