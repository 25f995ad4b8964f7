"""Every Python place that needs the estimator names asks the registry, and
everything per estimator (profile tensors, Scorer tensors, GPU kernel, tail-prior
fallback) is declared on its class, so that no other product module keeps a
per-estimator table (DEVELOPERS.md, "Adding an estimator")."""
import re
from pathlib import Path

import click
import numpy as np
import pytest

from careg_edge import profile
from careg_edge.calibration import tail_prior
from careg_edge.commands import demo, enroll
from careg_edge.commands import eval as eval_cmd
from careg_edge.errors import BadHeader, UserInputError
from careg_edge.estimators import registry

ROOT = Path(__file__).resolve().parents[1]
# the product's sources (the package, and calibration/ + export/ installed inside it)
PRODUCT = [ROOT / "careg_edge", ROOT / "calibration", ROOT / "export"]
# a registered name as a string literal: "padim", 'patchcore', ...
NAME_LITERAL = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, registry.NAMES)))


def _choices(cmd, name):
    opt = next(p for p in cmd.params if p.name == name)
    return tuple(opt.type.choices) if isinstance(opt.type, click.Choice) else opt.help


def _product_files():
    for folder in PRODUCT:
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(ROOT)
            if rel.parts[:2] in (("careg_edge", "lab"), ("careg_edge", "estimators")):
                continue   # the lab is not the product; the estimators declare themselves
            yield rel, f.read_text(encoding="utf-8")


def name_literals(source: str):
    """'line N: name' for every line that spells two or more registered names as
    string literals (a per-estimator list or table), and every comparison or key
    of one name (`== "patchcore"`, `{"orthoad": ...}`, `.get("padim")`)."""
    found = []
    for n, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        names = NAME_LITERAL.findall(code)
        keyed = re.search(r"""(==|!=|\bin)\s*["'](%s)["']|["'](%s)["']\s*:|\.get\(\s*["'](%s)["']"""
                          % (("|".join(registry.NAMES),) * 3), code)
        if len(set(names)) >= 2 or keyed:
            found.append(f"line {n}: {code.strip()}")
    return found


def test_name_literals_finds_lists_tables_and_comparisons():
    src = ('ESTIMATORS = ("padim", "orthoad", "patchcore")\n'
           'if est == "patchcore":\n'
           'FALLBACK = {"orthoad": "padim"}\n'
           'x = table.get("padim")\n'
           'default = "patchcore"  # one default is not a table\n'
           'for est in ((name, rule), ("patchcore", "top20%")):\n'
           '# "padim" and "orthoad" in a comment\n')
    assert [f.split(":")[0] for f in name_literals(src)] == ["line 1", "line 2", "line 3", "line 4"]


def test_no_per_estimator_table_outside_the_registry():
    """A per-estimator list, table or branch in a product module fails here: declare
    it on the estimator's class and read it through registry.estimator_class."""
    found = {str(rel): hits for rel, src in _product_files() if (hits := name_literals(src))}
    assert found == {}


def test_profile_format_knows_exactly_the_registered_estimators():
    assert registry.NAMES == ("padim", "orthoad", "patchcore")
    assert profile.ESTIMATORS is registry.NAMES
    assert not hasattr(profile, "_TENSORS") and not hasattr(tail_prior, "FALLBACK")
    tensors = {n: set(registry.estimator_class(n).profile_tensors) for n in registry.NAMES}
    assert tensors == {"padim": {"mean", "precision_factor"},
                       "orthoad": {"mean", "precision_factor", "projection"},
                       "patchcore": {"bank", "bank_pos"}}


def test_every_registered_estimator_declares_its_places():
    from careg_edge.gpu.distances import KERNELS   # needs torch
    for name in registry.NAMES:
        cls = registry.estimator_class(name)
        assert cls.name == name and cls.profile_tensors and cls.gpu_kernel in KERNELS
        assert cls.tail_prior_fallback in (None,) + registry.NAMES
        for method in ("check_shapes", "scorer_args"):
            assert getattr(cls, method).__func__ is not getattr(registry.Estimator, method).__func__
    assert tail_prior._fallback("orthoad") == "padim"
    assert tail_prior._fallback("padim") == "padim" and tail_prior._fallback("other") == "other"
    with pytest.raises(UserInputError, match="unknown 'other'"):
        registry.estimator_class("other")


def test_shape_checks_are_the_classes():
    P, D = 6, 3
    padim = {"mean": np.zeros((P, D), np.float32),
             "precision_factor": np.zeros((P, D * (D + 1) // 2), np.float32)}
    cls = registry.estimator_class
    assert cls("padim").check_shapes(padim, P) is None
    assert cls("padim").check_shapes(padim, P + 1) == "mean shape (6, 3), grid has 7 positions"
    ortho = dict(padim, projection=np.zeros((10, D + 1), np.float32))
    assert cls("orthoad").check_shapes(ortho, P) == "projection shape (10, 4) does not end in D=3"
    bank = {"bank": np.zeros((4, D), np.float32), "bank_pos": np.array([0, 1, 5, 6], np.int32)}
    assert cls("patchcore").check_shapes(bank, P) == "bank_pos outside the grid"
    sc = cls("patchcore").scorer_args({"bank": bank["bank"].astype(np.float64),
                                       "bank_pos": bank["bank_pos"].astype(np.int64)}, {"radius": 1})
    assert (sc["search"], sc["radius"], sc["reweight_k"]) == ("global", 1, 9)
    assert sc["tensors"]["bank"].dtype == np.float32 and sc["tensors"]["bank_pos"].dtype == np.int32
    np.testing.assert_array_equal(sc["tensors"]["bank_pos"], [0, 1, 5, 6])
    assert set(cls("orthoad").scorer_args(ortho, {"search": "local"})) == {"tensors"}
    p = profile.Profile("patchcore", bank, 1.0, (2, 3), (8, 12), 1.0, "h" * 64)
    with pytest.raises(BadHeader, match="inconsistent profile: bank_pos outside the grid"):
        p.validate("x.careg")


def test_the_compiled_road_scores_exactly_the_registered_estimators():
    """The C++ table (road_score.cpp, estimator_rows) and the registry name the same
    estimators in the same order; a name in neither is refused by both readers."""
    from careg_edge import _core
    assert tuple(_core.estimator_names()) == registry.NAMES
    t = {"mean": np.zeros((4, 2), np.float32), "precision_factor": np.zeros((4, 3), np.float32)}
    with pytest.raises(Exception, match="estimator 'other' is not padim, orthoad or patchcore"):
        _core.Scorer("other", [2, 2], [8, 8], 1.0, "max", t)
    assert _core.Scorer("orthoad", [2, 2], [8, 8], 1.0, "max", t).dim == 2


def test_cli_offers_the_registered_estimators():
    assert _choices(enroll.command, "estimator") == registry.NAMES
    assert _choices(demo.command, "estimator") == registry.NAMES
    assert _choices(eval_cmd.command, "estimator").endswith(", ".join(registry.NAMES) + ".")
