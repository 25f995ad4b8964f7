"""Profile file: bit-exact round trip, every truncation and every flipped byte refused."""
import numpy as np
import pytest

from careg_edge.errors import BadHeader, EncoderMismatch, FormatError, VersionMismatch
from careg_edge.profile import Profile


def _padim(D=4, grid=(2, 3), fp16=False):
    rng = np.random.default_rng(0)
    P = grid[0] * grid[1]
    fac = rng.normal(size=(P, D * (D + 1) // 2)).astype(np.float16 if fp16 else np.float32)
    return Profile("padim", {"mean": rng.normal(size=(P, D)).astype(np.float32),
                             "precision_factor": fac,
                             "channel_index": np.arange(D, dtype=np.int64) * 3},
                   threshold=0.1 + 1 / 3, grid=grid, image_size=(16, 24), sigma=4.0,
                   encoder_hash="ab" * 32, info={"augment": {"chosen": ["identity"]}})


def _patchcore():
    rng = np.random.default_rng(1)
    return Profile("patchcore", {"bank": rng.normal(size=(7, 5)).astype(np.float32),
                                 "bank_pos": np.array([0, 1, 2, 3, 4, 5, 0], np.int32)},
                   threshold=2.5, grid=(2, 3), image_size=(16, 24), sigma=4.0,
                   encoder_hash="cd" * 32)


@pytest.mark.parametrize("make", [_padim, lambda: _padim(fp16=True), _patchcore])
def test_round_trip_bit_exact(tmp_path, make):
    p = make()
    path = p.save(tmp_path / "x.careg")
    q = Profile.load(path)
    assert (q.estimator, q.threshold, q.grid, q.image_size, q.sigma, q.encoder_hash) == \
        (p.estimator, p.threshold, p.grid, p.image_size, p.sigma, p.encoder_hash)
    assert q.info == p.info
    assert set(q.tensors) == set(p.tensors)
    for k, a in p.tensors.items():
        assert q.tensors[k].dtype == a.dtype and q.tensors[k].tobytes() == a.tobytes()
    q.save(tmp_path / "y.careg")  # re-saving gives the same bytes
    assert (tmp_path / "y.careg").read_bytes() == path.read_bytes()


def test_every_truncation_refused(tmp_path):
    raw = _padim().save(tmp_path / "x.careg").read_bytes()
    for n in range(len(raw)):
        with pytest.raises(FormatError):
            Profile.from_bytes(raw[:n], "cut.careg")


def test_every_flipped_byte_refused(tmp_path):
    raw = bytearray(_padim().save(tmp_path / "x.careg").read_bytes())
    for i in range(len(raw)):
        for mask in (0x01, 0xFF):
            bad = bytearray(raw)
            bad[i] ^= mask
            with pytest.raises(FormatError):
                Profile.from_bytes(bytes(bad), "flip.careg")


def test_error_names_the_file(tmp_path):
    path = _padim().save(tmp_path / "part.careg")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(FormatError, match="part.careg"):
        Profile.load(path)


def test_wrong_version_refused(tmp_path):
    from careg_edge.container import write_container
    p = _padim()
    write_container(tmp_path / "v2.careg", p.tensors, p.metadata(), "careg-profile", 2)
    with pytest.raises(VersionMismatch, match="v2.careg"):
        Profile.load(tmp_path / "v2.careg")


def test_inconsistent_shapes_refused(tmp_path):
    from careg_edge.container import write_container
    p = _padim()
    p.tensors["precision_factor"] = p.tensors["precision_factor"][:, :-1].copy()
    write_container(tmp_path / "s.careg", p.tensors, p.metadata(), "careg-profile", 1)
    with pytest.raises(BadHeader, match="precision_factor"):
        Profile.load(tmp_path / "s.careg")


def test_wrong_encoder_refused(tmp_path):
    p = Profile.load(_padim().save(tmp_path / "enc.careg"))
    p.check_encoder("ab" * 32)
    with pytest.raises(EncoderMismatch, match="enc.careg"):
        p.check_encoder("ef" * 32, "resnet18")


def test_image_score_flat_key_only_when_not_max(tmp_path):
    """max-rule profiles keep the pre-rule metadata (byte-identical files); any other
    rule is also written flat for the C++ reader, and survives a round trip."""
    old = _padim()
    assert "image_score" not in old.metadata()
    old.info["image_score"] = "max"
    assert "image_score" not in old.metadata()
    p = _padim()
    p.info["image_score"] = "top20%"
    assert p.metadata()["image_score"] == "top20%"
    q = Profile.load(p.save(tmp_path / "t.careg"))
    assert q.image_score == "top20%" and q.metadata() == p.metadata()
    assert Profile.load(old.save(tmp_path / "m.careg")).image_score == "max"


@pytest.mark.parametrize("flat,info", [("mean", "top10%"), ("mean", None), ("max", "mean")])
def test_image_score_flat_key_must_match_the_json(tmp_path, flat, info):
    from careg_edge.container import write_container
    p = _padim()
    if info is not None:
        p.info["image_score"] = info
    write_container(tmp_path / "x.careg", p.tensors, dict(p.metadata(), image_score=flat),
                    "careg-profile", 1)
    with pytest.raises(BadHeader, match=f"x.careg: metadata 'image_score' is '{flat}'.*re-enroll"):
        Profile.load(tmp_path / "x.careg")


@pytest.mark.parametrize("bad", ["median", "top0%", "top100.5%", "top+5%", "top5.%", "top٣%"])
def test_unknown_image_score_in_the_json_refused(tmp_path, bad):
    """A rule the C++ reader would refuse is neither written nor read."""
    from careg_edge.container import write_container
    p = _padim()
    p.info["image_score"] = bad
    with pytest.raises(BadHeader, match="re-enroll"):
        p.save(tmp_path / "w.careg")
    meta = {k: v for k, v in p.metadata().items() if k != "image_score"}
    write_container(tmp_path / "r.careg", p.tensors, meta, "careg-profile", 1)
    with pytest.raises(BadHeader, match="'image_score' is"):
        Profile.load(tmp_path / "r.careg")
