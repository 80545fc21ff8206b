"""The command line's own surface: help at every level, --seed's range, bad option values,
and what -v adds to an error."""
from __future__ import annotations

import pytest

from harness.cli import COMMANDS, build_parser, main
from harness.cli.list_cmd import ListCommand
from harness.errors import HarnessError

SUBCOMMANDS = [command.name for command in COMMANDS]


def _exit_status(argv: list[str]) -> int:
    """The status `harness ARGV` ends with, whether main returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line_error(capsys, argv: list[str]) -> str:
    """Assert `harness ARGV` fails with status 2 and a single line on stderr; return that line."""
    status = _exit_status(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_exits_zero_and_shows_every_command(capsys, flag):
    assert _exit_status([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: harness")
    assert "95% intervals" in out  # report's and compare's help, printed verbatim
    for name in SUBCOMMANDS:
        assert f"    {name} " in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_exits_zero(capsys, command):
    assert _exit_status([command, "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: harness {command}") and captured.err == ""


def test_bare_harness_prints_the_help_and_returns_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: harness")


def test_a_percent_in_any_future_help_string_is_printed_verbatim():
    parser = build_parser()
    parser.add_argument("--share", help="keep 50% of pixels, %d or %(nothing)s")
    assert "keep 50% of pixels, %d or %(nothing)s" in " ".join(parser.format_help().split())


@pytest.mark.parametrize("command", ["run", "train", "compare", "report"])
@pytest.mark.parametrize("seed", ["-1", str(2**63), "99999999999999999999999", "1.5", "x"])
def test_seed_out_of_range_is_argparse_error_naming_value_and_range(capsys, command, seed):
    required = {"run": ["--method", "m", "--dataset", "d"], "train": ["--method", "m", "--dataset", "d"],
                "compare": ["A", "B"], "report": ["runs"]}[command]
    status = _exit_status([command, *required, "--seed", seed])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines()[-1] == (
        f"harness {command}: error: argument --seed: {seed!r} is not a whole number with 0 <= seed < 2**63"
    )


def test_seed_accepts_the_full_range():
    parser = build_parser()
    for seed in (0, 2**63 - 1):
        assert parser.parse_args(["run", "--method", "m", "--dataset", "d", "--seed", str(seed)]).seed == seed


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-Infinity", "1e400"])
def test_non_finite_float_option_is_one_line_naming_plugin_option_and_value(capsys, tmp_path, value):
    line = _one_line_error(capsys, ["run", "--method", "tokencut", "--method-args", f"tau={value}",
                                    "--dataset", "synthetic", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert line == (f"harness run: error: method 'tokencut': option tau={value!r} is not a valid float: "
                    f"expected a finite number")
    assert not (tmp_path / "runs").exists()


def _fail_with_cause(self, args):
    try:
        {}["plugin bug"]
    except KeyError as exc:
        raise HarnessError("the plugin failed (run again with -v for the traceback)") from exc


def test_error_with_a_cause_is_one_line_without_verbose(capsys, monkeypatch):
    monkeypatch.setattr(ListCommand, "run", _fail_with_cause)
    line = _one_line_error(capsys, ["list"])
    assert line == "harness list: error: the plugin failed (run again with -v for the traceback)"


def test_verbose_error_with_a_cause_prints_the_cause_traceback_first(capsys, monkeypatch):
    monkeypatch.setattr(ListCommand, "run", _fail_with_cause)
    assert main(["-v", "list"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "KeyError: 'plugin bug'" in lines
    assert lines[-1] == "harness list: error: the plugin failed (run again with -v for the traceback)"
