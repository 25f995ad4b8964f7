"""The bundled encoder matches its model card (file hash, encoder hash, README) and
reproduces the card's reference image scores on a fixed metal_plate slice."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from careg_edge.container import sha256_file
from careg_edge.errors import FormatError
from careg_edge.lab import model_card as mc

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "careg_edge" / "models" / "default.onnx"
DATA = REPO.parent / "shared" / "data" / "mpdd" / "metal_plate"


@pytest.fixture(scope="module")
def card():
    return mc.read_card(MODEL)


def test_bundled_encoder_matches_its_card_and_the_readme(card):
    from careg_edge.runtime import load_runtime
    assert sha256_file(MODEL) == card["sha256"]
    rt = load_runtime(None, "onnxruntime", 1, verbose=False)   # what Inspector() opens
    assert rt.meta.encoder_hash == card["encoder_hash"]
    assert rt.meta.backbone == card["backbone"]
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Model card"):]
    assert card["sha256"] in section and card["encoder_hash"] in section
    assert re.search(card["backbone"].replace("_", r"[_\- ]?"), section, re.I)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/mpdd/metal_plate not present")
def test_reference_slice_scores_reproduce(card):
    ref = card["reference_slice"]
    assert tuple(ref["support"]) == mc.SLICE_SUPPORT and tuple(ref["test"]) == mc.SLICE_TEST
    got = mc.slice_scores(str(MODEL), DATA)
    np.testing.assert_allclose(got, ref["scores"], rtol=ref["rtol"])
    # and the slice is not degenerate: good and defective scores differ
    assert len(set(np.round(got, 4))) == len(got)


def test_card_checksum_and_version_are_enforced(card, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    path = mc.card_path(model)
    path.write_text(json.dumps(card))
    assert mc.read_card(model)["sha256"] == card["sha256"]
    edited = dict(card, sha256="0" * 64)
    path.write_text(json.dumps(edited))
    with pytest.raises(FormatError, match="checksum mismatch.*rewrite it"):
        mc.read_card(model)
    path.write_text(json.dumps(dict(card, format_version=99)))
    with pytest.raises(FormatError, match="not a version-1 model card"):
        mc.read_card(model)
    path.write_text("{not json")
    with pytest.raises(FormatError, match="unreadable"):
        mc.read_card(model)
