import numpy as np
import pytest

from careg_edge import container
from careg_edge.errors import ChecksumMismatch, FormatError, VersionMismatch, WrongKind


def _write(tmp_path):
    p = tmp_path / "x.bin"
    t = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.int64),
         "h": np.ones(5, np.float16)}
    container.write_container(p, t, {"k": "v"}, kind="careg-test", version=3)
    return p, t


def test_round_trip_is_bit_exact(tmp_path):
    p, t = _write(tmp_path)
    got, meta = container.read_container(p, "careg-test", 3)
    assert meta["k"] == "v" and meta["format_version"] == "3"
    for k in t:
        assert got[k].dtype == t[k].dtype and np.array_equal(got[k], t[k])


def test_safetensors_compatible(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    p, t = _write(tmp_path)
    got = st.load_file(str(p))
    assert np.array_equal(got["a"], t["a"])


def test_every_flipped_byte_is_refused(tmp_path):
    p, _ = _write(tmp_path)
    raw = p.read_bytes()
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x5A
        with pytest.raises(FormatError):
            container.parse_container(bytes(bad), "x", "careg-test", 3)


def test_every_truncation_is_refused(tmp_path):
    p, _ = _write(tmp_path)
    raw = p.read_bytes()
    for n in range(len(raw)):
        with pytest.raises(FormatError):
            container.parse_container(raw[:n], "x", "careg-test", 3)


def test_kind_and_version_named(tmp_path):
    p, _ = _write(tmp_path)
    with pytest.raises(WrongKind, match="careg-test"):
        container.read_container(p, "careg-profile", 3)
    with pytest.raises(VersionMismatch, match="version 3"):
        container.read_container(p, "careg-test", 4)


def test_checksum_detects_data_change(tmp_path):
    p, _ = _write(tmp_path)
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    with pytest.raises(ChecksumMismatch, match="corrupt"):
        container.parse_container(bytes(raw), "x", "careg-test", 3)


def test_scalar_tensor_keeps_its_shape(tmp_path):
    p = tmp_path / "s.bin"
    container.write_container(p, {"n": np.array(7, np.int64)}, {}, kind="careg-test", version=1)
    got, _ = container.read_container(p, "careg-test", 1)
    assert got["n"].shape == () and int(got["n"]) == 7


def test_written_file_is_readable_by_others(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        p, _ = _write(tmp_path)
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644
