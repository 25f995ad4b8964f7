"""The on-disk container for every file careg-edge writes (profiles, checkpoints).

Layout = safetensors (8-byte little-endian header length, JSON header, raw
little-endian tensors), so C++ and other languages read it without Python.
`__metadata__` (all string values) carries:

    format            e.g. "careg-profile", "careg-checkpoint"
    format_version    integer as a string
    careg_edge_version
    checksum          CRC-32 (IEEE, zlib) of the whole file, computed with the
                      8 hex digits of this value set to "00000000"

Files are treated as untrusted on read: every length, offset, dtype and shape
is checked against the file size before use. Writes are atomic (temp file in
the same folder, fsync, rename). Full spec: docs/profile-format.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Dict, Mapping, Tuple

import numpy as np

from .errors import BadHeader, ChecksumMismatch, TruncatedFile, VersionMismatch, WrongKind

_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "U8": np.dtype("u1"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_PLACEHOLDER = "00000000"
_MAX_HEADER = 100 * 1024 * 1024


def _checksum_span(header: bytes, value: str) -> int:
    """Byte offset (within the header) of the checksum's 8 hex digits."""
    needle = b'"checksum":"' + value.encode("ascii") + b'"'
    pos = header.find(needle)
    if pos < 0 or header.find(needle, pos + 1) >= 0:
        raise BadHeader("checksum field missing or repeated")
    return pos + len(b'"checksum":"')


def write_container(path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str],
                    kind: str, version: int) -> None:
    """Atomically write `tensors` and string `metadata` as a checksummed container."""
    from .version import __version__

    meta = {str(k): str(v) for k, v in metadata.items()}
    meta.update(format=kind, format_version=str(version), careg_edge_version=__version__,
                checksum=_PLACEHOLDER)
    header: Dict[str, object] = {"__metadata__": meta}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into [1])
            arr = arr.copy(order="C")
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if np.dtype(dt) not in _NAMES:
            raise TypeError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
        data = arr.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": _NAMES[np.dtype(dt)], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)  # 8-byte aligned tensor data
    buf = bytearray(struct.pack("<Q", len(hbytes)) + hbytes + b"".join(blobs))
    at = 8 + _checksum_span(hbytes, _PLACEHOLDER)
    buf[at:at + 8] = f"{zlib.crc32(bytes(buf)) & 0xFFFFFFFF:08x}".encode("ascii")
    atomic_write_bytes(path, bytes(buf))


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (models and engines are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; a profile is shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_container(path, kind: str, version: int) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read and fully validate a container; raise a named FormatError naming `path`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TruncatedFile(f"{path}: cannot read ({e.strerror})") from None
    return parse_container(raw, str(path), kind, version)


def parse_container(raw: bytes, where: str, kind: str, version: int):
    if len(raw) < 8:
        raise TruncatedFile(f"{where}: file is {len(raw)} bytes, too short to be a {kind} file")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > min(len(raw) - 8, _MAX_HEADER):
        raise TruncatedFile(f"{where}: header length {hlen} exceeds the file size ({len(raw)} bytes); "
                            "the file is truncated or not a careg-edge file")
    hbytes = raw[8:8 + hlen]
    try:
        header = json.loads(hbytes.decode("utf-8"))
        meta = header.pop("__metadata__")
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError
    except (UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError):
        raise BadHeader(f"{where}: header is not valid careg-edge JSON metadata") from None
    got_kind = meta.get("format")
    if got_kind != kind:
        raise WrongKind(f"{where}: is a {got_kind or 'foreign'} file, expected {kind}")
    try:
        at = 8 + _checksum_span(hbytes, meta.get("checksum", ""))
    except BadHeader:
        raise BadHeader(f"{where}: checksum field missing or malformed") from None
    zeroed = bytearray(raw)
    zeroed[at:at + 8] = _PLACEHOLDER.encode("ascii")
    if f"{zlib.crc32(bytes(zeroed)) & 0xFFFFFFFF:08x}" != meta["checksum"]:
        raise ChecksumMismatch(f"{where}: checksum mismatch, the file is corrupt; "
                               "write it again (re-enroll / re-save)")
    if meta.get("format_version") != str(version):
        raise VersionMismatch(f"{where}: {kind} format version {meta.get('format_version')} "
                              f"(written by careg-edge {meta.get('careg_edge_version', '?')}); "
                              f"this careg-edge reads version {version}: re-create the file")
    return _tensors(header, raw, 8 + hlen, where), meta


def _tensors(header: dict, raw: bytes, start: int, where: str) -> Dict[str, np.ndarray]:
    out, size = {}, len(raw) - start
    for name, spec in header.items():
        try:
            dt = _DTYPES[spec["dtype"]]
            shape = tuple(int(s) for s in spec["shape"])
            b, e = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise BadHeader(f"{where}: tensor {name!r} has a malformed entry") from None
        if any(s < 0 for s in shape) or not (0 <= b <= e <= size):
            raise BadHeader(f"{where}: tensor {name!r} lies outside the file")
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != e - b:
            raise BadHeader(f"{where}: tensor {name!r} size does not match its shape")
        out[name] = np.frombuffer(raw, dtype=dt, count=(e - b) // dt.itemsize,
                                  offset=start + b).reshape(shape).copy()
    return out


def metadata_json(meta: Mapping[str, str], key: str, where: str):
    """Decode a JSON-valued metadata entry, with a clear error if it is absent."""
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError):
        raise BadHeader(f"{where}: metadata {key!r} missing or not JSON") from None
