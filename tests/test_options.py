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
     ({"flag": "maybe"}, "flag='maybe' is not a valid bool")],
)
def test_bad_values_name_the_option(given, fragment):
    with pytest.raises(PluginError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        resolve_options(OPTIONS, given, "method 'm'")
