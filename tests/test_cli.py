"""The `careg-edge` group: every verb's help, global options, config files, did-you-mean."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from careg_edge.cli import VERBS, cli

OURS = ["enroll", "calibrate", "run", "demo", "info"]


def present_verbs():
    ctx = click.Context(cli)
    return cli.list_commands(ctx)


def test_group_help_lists_verbs_and_ends_with_example():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for v in OURS:
        assert f"  {v} " in r.output
    for opt in ("--verbose", "--quiet", "--device", "--backend", "--threads", "--config"):
        assert opt in r.output
    assert r.output.rstrip().splitlines()[-1].strip().startswith("Example: careg-edge")


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_help_is_complete_and_ends_with_an_example(verb):
    if verb not in present_verbs():
        pytest.skip(f"careg_edge/commands/{verb.replace('-', '_')}.py not written yet")
    r = CliRunner().invoke(cli, [verb, "--help"])
    assert r.exit_code == 0, r.output
    tail = r.output[r.output.index("Show this message and exit."):]  # after the options
    assert "Example" in tail and "careg-edge " in tail, tail
    cmd = cli.get_command(click.Context(cli), verb)
    undocumented = [p.opts[-1] for p in cmd.params  # complete: every option is documented
                    if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not undocumented, f"careg-edge {verb}: options without help text: {undocumented}"


def test_console_script_help_runs_without_torch():
    code = ("import sys, careg_edge.cli as c\n"
            "try:\n    c.main(['run', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "for v in ('enroll', 'calibrate', 'demo', 'info'):\n"
            "    try:\n        c.main([v, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_mistyped_verb_choice_and_backend_suggest():
    r = CliRunner().invoke(cli, ["rnu"])
    assert r.exit_code == 2 and "did you mean 'run'" in r.output
    r = CliRunner().invoke(cli, ["enroll", "--support", "x", "-o", "y", "--estimator", "patchcor"])
    assert r.exit_code == 2 and "did you mean 'patchcore'" in r.output
    r = CliRunner().invoke(cli, ["--backend", "onnxruntme", "info"])
    assert r.exit_code == 2 and "did you mean 'onnxruntime'" in r.output
    r = CliRunner().invoke(cli, ["--device", "cdua", "info"])
    assert r.exit_code == 2 and "did you mean 'cuda'" in r.output
    r = CliRunner().invoke(cli, ["run", "--profile", "p", "--resize-mode", "letterbx"])
    assert r.exit_code == 2 and "did you mean 'letterbox'" in r.output


@pytest.fixture(autouse=True)
def _no_torch_probe(monkeypatch):
    # `info` asks torch about CUDA; importing torch costs ~10 s on a loaded 2-core box
    monkeypatch.setattr("careg_edge.info.collect", lambda: {"careg-edge": "test"})


def _info(args):
    r = CliRunner().invoke(cli, args + ["info", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_config_sets_globals_and_command_line_wins(tmp_path):
    cfg = tmp_path / "line3.toml"
    cfg.write_text('backend = "onnxruntime"\nthreads = 3\ndevice = "cpu"\n')
    d = _info(["--config", str(cfg)])
    assert (d["setting backend"], d["setting threads"], d["setting device"]) == ("onnxruntime", "3", "cpu")
    d = _info(["--config", str(cfg), "--threads", "1"])
    assert d["setting threads"] == "1" and d["config"] == str(cfg)


def test_config_verb_table_fills_options_relative_to_the_file(tmp_path, fake, monkeypatch):
    from careg_edge.profile import Profile
    from test_live import write_folder
    conf_dir = tmp_path / "conf"
    write_folder(conf_dir / "good", n_good=4, n_bad=0)
    (conf_dir / "line3.toml").write_text(
        '[enroll]\nsupport = "good"\nestimator = "padim"\noutput = "line3.careg"\nshots = 3\n')
    monkeypatch.chdir(tmp_path)  # paths in the config are relative to the config, not the cwd
    r = CliRunner().invoke(cli, ["--config", "conf/line3.toml", "enroll", "--estimator", "patchcore"])
    assert r.exit_code == 0, r.output
    prof = Profile.load(conf_dir / "line3.careg")
    assert prof.info["n_support"] == 3  # shots from the config
    assert prof.estimator == "patchcore"  # the command line won over the config


def test_config_errors_are_one_line_with_suggestions(tmp_path):
    cfg = tmp_path / "c.toml"
    cases = {'thread = 2\n': "did you mean 'threads'",
             '[rn]\ncamera = 0\n': "did you mean 'run'",
             '[run]\ncamra = 0\n': "did you mean 'camera'",
             'backend = "tensort"\n': "did you mean 'tensorrt'",
             'threads = "x"\n': "threads must be",
             'this is = not toml =\n': "not valid TOML"}
    for text, want in cases.items():
        cfg.write_text(text)
        r = CliRunner().invoke(cli, ["--config", str(cfg), "info"])
        assert r.exit_code == 2, (text, r.output)
        assert want in r.output and str(cfg) in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "info"])
    assert r.exit_code == 2 and "file not found" in r.output


def test_user_errors_are_one_line_and_verbose_adds_the_traceback(tmp_path, fake):
    args = ["enroll", "--support", str(tmp_path / "missing"), "-o", str(tmp_path / "p.careg")]
    r = subprocess.run([sys.executable, "-m", "careg_edge.cli"] + args, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("careg-edge: error:") and "does not exist" in r.stderr
    r = subprocess.run([sys.executable, "-m", "careg_edge.cli", "--verbose"] + args,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_quiet_silences_info_lines(tmp_path, fake):
    from test_live import write_folder
    write_folder(tmp_path / "good", n_good=3, n_bad=0)
    args = ["enroll", "--support", str(tmp_path / "good"), "-o", str(tmp_path / "p.careg")]
    r = CliRunner().invoke(cli, ["--quiet"] + args)
    assert r.exit_code == 0 and r.output == ""


@pytest.fixture
def fake(monkeypatch):
    from test_live import FakeInspector
    insp = FakeInspector()
    monkeypatch.setattr("careg_edge.cli_context.make_inspector", lambda model=None: insp)
    return insp


def test_verbs_registry_matches_issue():
    assert VERBS == ["train", "export", "build-engine", "enroll", "calibrate", "run", "serve", "eval", "bench",
                     "info", "demo"]
    assert set(OURS) <= set(present_verbs())
    assert Path(__file__).resolve().parents[1].joinpath("careg_edge/commands/run.py").exists()


def test_train_backbone_choices_are_the_backbones():
    """commands/train.py spells the names out (no torch import at CLI start-up)."""
    from careg_edge.commands.train import _BACKBONES
    from careg_edge.encoder.backbones import BACKBONES
    assert sorted(_BACKBONES) == sorted(BACKBONES)
