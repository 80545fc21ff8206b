"""Plugin options: declaration, ``k=v,...`` parsing, and validation with clear errors."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.errors import PluginError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


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
    def converter(self) -> Callable[[str], Any]:
        if self.type is not None:
            return _parse_bool if self.type is bool else self.type
        if isinstance(self.default, bool):
            return _parse_bool
        if self.default is None:
            return str
        return type(self.default)

    def convert(self, value: Any, owner: str) -> Any:
        """Convert ``value`` (text from the CLI, or a Python value) to this option's type."""
        if value is None:
            return None
        converter = self.converter
        try:
            if isinstance(value, str) and converter is not str:
                converted = converter(value)
            elif converter in (int, float, str, Path, _parse_bool) and not isinstance(value, str):
                converted = converter(value) if converter is not _parse_bool else bool(value)
            else:
                converted = converter(value)
        except (TypeError, ValueError) as exc:
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

    A value may contain ``=``; commas separate pairs. An empty string gives ``{}``.
    """
    if not text:
        return {}
    pairs: dict[str, str] = {}
    for part in text.split(","):
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
