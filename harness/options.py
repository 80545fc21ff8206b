"""Plugin options: declaration, ``k=v,...`` parsing, and validation with clear errors."""
from __future__ import annotations

import difflib
import math
import numbers
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.errors import PluginError

#: Seeds must fit the signed 64-bit integer torch and NumPy seed with (``0 <= seed < SEED_LIMIT``).
SEED_LIMIT = 2**63

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, str):  # a Python value from code, not text from the command line
        return bool(value)
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _parse_float(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):  # nan and inf (also "1e400") silently poison every score
        raise ValueError("expected a finite number")
    return number


def _parse_int(value: Any) -> int:
    is_fraction = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    if is_fraction and not float(value).is_integer():  # int(2.7) would truncate silently
        raise ValueError("expected a whole number")
    return int(value)


def _parse_path(value: Any) -> Path:
    """A file or folder, made absolute: a run's identity must not depend on the directory the
    command was typed in."""
    return Path(os.path.abspath(Path(value).expanduser()))


#: The checked converter used for each plain Python type.
_CONVERTERS: dict[type, Callable[[Any], Any]] = {bool: _parse_bool, float: _parse_float, int: _parse_int,
                                                 Path: _parse_path}


@dataclass(frozen=True)
class Option:
    """One option of a plugin.

    Parameters
    ----------
    name : str
        The key users write in ``--method-args name=value``.
    default : Any
        The value used when the option is not given (``None`` allowed).
    help : str
        One line for ``harness list`` and error messages.
    type : callable, optional
        Converts the command-line text; inferred from ``default`` when omitted.
    choices : tuple, optional
        The allowed values, if the option is an enumeration.
    """

    name: str
    default: Any
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: tuple = ()

    @property
    def converter(self) -> Callable[[Any], Any]:
        if self.type is not None:
            base = self.type
        elif self.default is None:
            base = str
        else:
            base = type(self.default)
        return _CONVERTERS.get(base, base)

    def convert(self, value: Any, owner: str) -> Any:
        """Convert ``value`` (text from the CLI, or a Python value) to this option's type.

        Parameters
        ----------
        value : Any
            The given value; ``None`` stays ``None``.
        owner : str
            The plugin's label (e.g. ``method 'tokencut'``), named in errors.

        Returns
        -------
        Any
            The converted value.

        Raises
        ------
        PluginError
            If the value does not convert (floats must be finite, ints whole) or is not
            one of the choices.
        """
        if value is None:
            return None
        try:
            converted = self.converter(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PluginError(
                f"{owner}: option {self.name}={value!r} is not a valid {self.type_name}: {exc}"
            ) from None
        if self.choices and converted not in self.choices:
            raise PluginError(
                f"{owner}: option {self.name}={value!r} is not one of {list(self.choices)}"
            )
        return converted

    @property
    def type_name(self) -> str:
        return getattr(self.converter, "__name__", "value").replace("_parse_", "")

    def describe(self) -> str:
        return f"{self.name} ({self.type_name}, default {self.default!r}): {self.help}"


def parse_kv(text: str | None, flag: str = "--method-args") -> dict[str, str]:
    """Parse ``"a=1,b=x"`` into ``{"a": "1", "b": "x"}``.

    Commas separate pairs; a value may contain ``=``. Quote a value (``dir="a,b"``,
    ``dir='a,b'``) or escape a character (``dir=a\\,b``) to keep a comma, shell-style.
    Whitespace around pairs is dropped; an empty string gives ``{}``.

    Parameters
    ----------
    text : str or None
        The flag's text.
    flag : str, optional
        The flag the text came from, named in errors.

    Returns
    -------
    dict of str to str
        The pairs, in the given order.

    Raises
    ------
    PluginError
        If a quote is not closed, a pair has no ``=`` or no key, or a key is given twice.
    """
    if not text:
        return {}
    pairs: dict[str, str] = {}
    for part in _split_pairs(text, flag):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PluginError(
                f"{flag} {text!r}: {part!r} is not of the form key=value "
                f"(write e.g. {flag} sigma=0.3,name=x)"
            )
        if key in pairs:
            raise PluginError(f"{flag} {text!r}: {key!r} is given twice")
        pairs[key] = value.strip()
    return pairs


def _split_pairs(text: str, flag: str) -> list[str]:
    """The comma-separated parts of ``text``, with shell-style quotes and backslashes resolved."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace = ","  # only commas separate pairs: values may hold spaces
    lexer.whitespace_split = True
    lexer.commenters = ""  # a '#' is part of a value, not a comment
    try:
        return list(lexer)
    except ValueError as exc:  # shlex's "No closing quotation" / "No escaped character"
        raise PluginError(
            f"{flag} {text!r}: {str(exc).lower()} (quote a value that holds a comma, e.g. "
            f"dir='a,b', and escape a lone quote or backslash with a backslash)"
        ) from None


def resolve_options(options: tuple[Option, ...], given: dict[str, Any], owner: str) -> dict[str, Any]:
    """Fill defaults, convert types, and reject names the plugin does not have."""
    by_name = {opt.name: opt for opt in options}
    unknown = [key for key in given if key not in by_name]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(by_name), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        known = "; ".join(opt.describe() for opt in options) or "it takes no options"
        raise PluginError(f"{owner} has no option {key!r}.{hint} Its options: {known}")
    return {
        name: opt.convert(given[name], owner) if name in given else opt.default
        for name, opt in by_name.items()
    }
