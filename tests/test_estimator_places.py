"""Every Python place that needs the estimator names asks the registry, and the
profile format has a tensor table for each registered estimator (DEVELOPERS.md,
"Adding an estimator")."""
import click

from careg_edge import profile
from careg_edge.commands import demo, enroll
from careg_edge.commands import eval as eval_cmd
from careg_edge.estimators import registry


def _choices(cmd, name):
    opt = next(p for p in cmd.params if p.name == name)
    return tuple(opt.type.choices) if isinstance(opt.type, click.Choice) else opt.help


def test_profile_format_knows_exactly_the_registered_estimators():
    assert registry.NAMES == ("padim", "orthoad", "patchcore")
    assert set(profile._TENSORS) == set(registry.NAMES)
    assert profile.ESTIMATORS is registry.NAMES


def test_cli_offers_the_registered_estimators():
    assert _choices(enroll.command, "estimator") == registry.NAMES
    assert _choices(demo.command, "estimator") == registry.NAMES
    assert _choices(eval_cmd.command, "estimator").endswith(", ".join(registry.NAMES) + ".")
