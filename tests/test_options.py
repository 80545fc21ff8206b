"""Plugin options: ``k=v`` parsing, type conversion and clear errors."""
import pytest

from harness.errors import PluginError
from harness.options import Option, parse_kv, resolve_options

OPTIONS = (
    Option("sigma", 0.25, "width"),
    Option("steps", 3, "how many"),
    Option("flag", False, "on/off"),
    Option("mode", "fast", "which", choices=("fast", "slow")),
    Option("dir", None, "a folder"),
)


def test_parse_kv_splits_pairs_and_keeps_equals_in_values():
    assert parse_kv("a=1, b=x=y,c=") == {"a": "1", "b": "x=y", "c": ""}
    assert parse_kv("") == {}


@pytest.mark.parametrize("text", ["sigma", "=3", "a=1,a=2"])
def test_parse_kv_rejects_malformed_text(text):
    with pytest.raises(PluginError, match="--method-args"):
        parse_kv(text)


def test_resolve_converts_types_and_fills_defaults():
    resolved = resolve_options(OPTIONS, {"sigma": "0.5", "steps": "7", "flag": "yes"}, "method 'm'")
    assert resolved == {"sigma": 0.5, "steps": 7, "flag": True, "mode": "fast", "dir": None}


def test_unknown_option_suggests_the_near_match_and_lists_options():
    with pytest.raises(PluginError) as err:
        resolve_options(OPTIONS, {"sigm": "1"}, "method 'm'")
    message = str(err.value)
    assert "has no option 'sigm'" in message and "Did you mean sigma" in message
    assert "steps (int, default 3)" in message


@pytest.mark.parametrize(
    "given, fragment",
    [({"steps": "two"}, "steps='two' is not a valid int"), ({"mode": "medium"}, "not one of ['fast', 'slow']"),
     ({"flag": "maybe"}, "flag='maybe' is not a valid bool"),
     ({"sigma": "wide"}, "method 'm': option sigma='wide' is not a valid float: could not convert string to float: 'wide'")],
)
def test_bad_values_name_the_option(given, fragment):
    with pytest.raises(PluginError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        resolve_options(OPTIONS, given, "method 'm'")


@pytest.mark.parametrize(
    "text", ['dir="a,b"', "dir='a,b'", r"dir=a\,b", ' dir = "a,b" '], ids=["double", "single", "backslash", "spaces"]
)
def test_parse_kv_keeps_a_quoted_or_escaped_comma_in_a_value(text):
    assert parse_kv(text) == {"dir": "a,b"}


def test_parse_kv_quoting_leaves_other_values_alone():
    assert parse_kv("dir='a,b',pattern={id}_x.png,name=a#1 b") == {
        "dir": "a,b", "pattern": "{id}_x.png", "name": "a#1 b"
    }


@pytest.mark.parametrize("text, reason", [("dir='a,b", "no closing quotation"), ('dir="a,b', "no closing quotation"),
                                          ("dir=a\\", "no escaped character")])
def test_parse_kv_unbalanced_quote_names_flag_and_text(text, reason):
    with pytest.raises(PluginError) as err:
        parse_kv(text, "--post-args")
    assert str(err.value).startswith(f"--post-args {text!r}: {reason} (quote a value that holds a comma, e.g. dir='a,b'")


# the same values as text, through the command line: tests/test_cli_surface.py
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected_naming_plugin_option_and_value(value):
    with pytest.raises(PluginError) as err:
        resolve_options(OPTIONS, {"sigma": value}, "method 'm'")
    assert str(err.value) == f"method 'm': option sigma={value!r} is not a valid float: expected a finite number"


def test_an_explicit_float_type_is_checked_too():
    options = (Option("lam", None, "weight", type=float),)
    assert resolve_options(options, {"lam": "256"}, "post 'bs'") == {"lam": 256.0}
    with pytest.raises(PluginError, match=r"post 'bs': option lam='inf' is not a valid float"):
        resolve_options(options, {"lam": "inf"}, "post 'bs'")


@pytest.mark.parametrize("value", ["2.5", "1e3", 2.5, float("inf")])
def test_ints_must_be_whole_numbers(value):
    with pytest.raises(PluginError, match=rf"method 'm': option steps={value!r} is not a valid int"):
        resolve_options(OPTIONS, {"steps": value}, "method 'm'")


def test_whole_python_numbers_convert_to_int():
    assert resolve_options(OPTIONS, {"steps": 4.0}, "method 'm'")["steps"] == 4
