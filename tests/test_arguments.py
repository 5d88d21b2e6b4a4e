"""Bad arguments end in one line naming the argument, before any work, in every file a user runs."""

import dataclasses
import importlib
import math
import typing

import pytest
import tyro

from conftest import ROOT, assert_rejected, run_in_process

TRAINING_FILES = ["ppo_continuous.py", "p3o_continuous.py", "ppo_cycle.py", "ppo_redo.py", "ppo_cbp.py",
                  "sac_sbp.py"]
INT_PROBES = (-1, 0)  # below and at the lower edge of a count, a step number or a seed
FLOAT_PROBES = (-1.0, 0.0, 1.5, math.nan)  # below zero, zero, above a share, and no number at all
UPPER_PROBES = {"seed": (2**31, 2**32)}  # numpy and dm_control take seeds below 2**32 (and the envs' seed + i)


def numeric_fields(args_class):
    """(name, type) of every int or float field (Optional ones too; bool is not numeric here)."""
    for f in dataclasses.fields(args_class):
        kinds = set(typing.get_args(f.type)) - {type(None)} or {f.type}
        if kinds <= {int, float} and bool not in kinds:
            yield f.name, float if float in kinds else int


CASES = [(script, name, value) for script in TRAINING_FILES
         for name, kind in numeric_fields(importlib.import_module(script[:-3]).Args)
         for value in (FLOAT_PROBES if kind is float else INT_PROBES) + UPPER_PROBES.get(name, ())]


@pytest.mark.parametrize("script, name, value", CASES, ids=[f"{s[:-3]}-{n}={v}" for s, n, v in CASES])
def test_every_numeric_argument_out_of_range_is_one_line_or_accepted(script, name, value, tmp_path):
    module = importlib.import_module(script[:-3])
    args = module.Args(run_dir=str(tmp_path / "runs"), **{name: value})
    try:
        module.validate_args(args)  # accepted: the run goes on with it
    except SystemExit as error:
        message = str(error.code)
        assert message.startswith("error: ") and "\n" not in message, message
        assert f"--{name.replace('_', '-')}" in message, message
    assert not (tmp_path / "runs").exists()


UNUSABLE = {"a file": lambda tmp: tmp / "file", "under a file": lambda tmp: tmp / "file" / "runs"}


@pytest.mark.parametrize("where", UNUSABLE)
@pytest.mark.parametrize("script", TRAINING_FILES)
def test_training_files_reject_a_negative_seed_and_an_unusable_run_dir(script, where, tmp_path):
    module = importlib.import_module(script[:-3])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="--run-dir"):
        module.validate_args(module.Args(run_dir=str(UNUSABLE[where](tmp_path))))
    with pytest.raises(SystemExit, match="--seed -1"):
        module.validate_args(module.Args(seed=-1, run_dir=str(tmp_path / "runs")))


@pytest.mark.parametrize("script", ["ppo_continuous.py", "sac_sbp.py"])
def test_a_negative_seed_fails_in_one_line_from_the_command_line(script, tmp_path):
    proc = assert_rejected(script, ["--seed", "-1"], "--seed -1", tmp_path, process=True)
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, flag", [
    (["reproduce.py", "table1", "--budget", "smoke", "--dry-run", "--runs-dir"], "--runs-dir"),
    (["benchmark.py", "--algos", "ppo_continuous", "--envs", "InvertedPendulum-v5", "--out"], "--out"),
])
def test_launchers_reject_an_unusable_directory(command, flag, tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_in_process(*command, tmp_path / "file" / "sub")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and flag in proc.stderr and "\n" not in proc.stderr.strip()


def test_reproduce_rejects_a_negative_seed(tmp_path):
    proc = run_in_process("reproduce.py", "table1", "--budget", "smoke", "--dry-run", "--seeds", "1", "-1",
                          "--runs-dir", tmp_path / "runs")
    assert proc.returncode != 0 and proc.stderr.strip() == "error: --seeds -1: a seed must be in [0, 2**31)"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", TRAINING_FILES)
def test_help_explains_every_argument(script, monkeypatch, capsys):
    """Every Args field has a doc comment that --help shows (tyro reads the comment beside or above the field)."""
    module = importlib.import_module(script[:-3])
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option, or two where the flag and its type are long
    with pytest.raises(SystemExit):
        tyro.cli(module.Args, args=["--help"])
    lines = [line.lstrip("│") for line in capsys.readouterr().out.splitlines()]
    indent = next(line.index("-h, --help") for line in lines if "-h, --help" in line)  # of an option's first row
    helps, flag = {}, None
    for line in lines:
        row = line.strip("│ ")
        if not row.strip("─-╭╮╰╯ "):  # a frame's border
            continue
        if line[indent:].startswith("-") and not line[:indent].strip():  # "--flag TYPE  help (default: x)"
            flag, _, row = row.partition("  ")  # the help maybe on the next, further indented rows
            flag = flag.split()[0].rstrip(",")
        helps[flag] = (helps.get(flag, "") + " " + row).split("(default:")[0].strip()
    for f in dataclasses.fields(module.Args):
        flag = "--" + f.name.replace("_", "-")
        assert len(helps.get(flag, "")) >= 15, f"{script}: {flag} has no help text in --help: {helps.get(flag)!r}"
    # a field without its own comment takes the comment block of the field above it: no help may repeat
    repeated = [flag for flag, text in helps.items() if list(helps.values()).count(text) > 1]
    assert not repeated, f"{script}: these options show the same help: {repeated}"
