"""Validation rules attached to settings fields, and the check that runs them (API.md §9).

A settings field is declared once, with its rules in its annotation:

    max_current_a: Annotated[float, between(MIN_CURRENT_A, MAX_CURRENT_A)] = 32.0

`check_fields(self)`, called from each settings dataclass's `__post_init__`, runs the rules of every
field in declaration order and raises `InvalidField` (a `ValueError`) naming the field and the
problem, so that a settings object built in code is checked exactly like one read from the file. The
loader (`loader.py`) reads the same annotations for what only the file can tell: `Required` (the file
must set a key that code may leave at its default), `TomlKey` (the key's name in the file),
`ExistingFile` (a path that must name a readable file) and `SecretFile` (a file holding a secret).

A rule is a function `rule(value, owner)` made by a factory here (`between(lo, hi)`, `positive()`,
...; lowercase); a loader marker is an instance of a small class (`Required()`, `TomlKey(name)`,
`ExistingFile()`, `SecretFile(into)`; CamelCase). Neither is a dataclass: creating a dataclass class
costs 1-3 ms at import (measured on the development machine), and start-up time matters more here than a repr.

Rules never do I/O and never convert: they get the value as the dataclass holds it and either
return or raise `Invalid`. A value of `None` means "not set" and is never checked. Messages follow
the project's config error style: "must be between 6 and 80, got 100" (numbers written as in the
file, 100 rather than 100.0; strings with repr()).

Standard: STYLE.md B6 (frozen dataclasses validated in `__post_init__` with ValueError), mypy --strict.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import fields

__all__ = [
    "ExistingFile",
    "Invalid",
    "InvalidField",
    "Required",
    "Rule",
    "SecretFile",
    "TomlKey",
    "above_field",
    "between",
    "check_fields",
    "each",
    "needs_field",
    "non_empty",
    "num",
    "one_of",
    "only_when",
    "positive",
    "positive_integer",
    "satisfies",
    "type_hints",
    "unique",
    "zero_or_between",
]

#: A check of one field's value; `owner` is the settings object, for rules that compare fields.
#: It returns, or raises `Invalid`.
Rule = Callable[[object, object], None]


class Invalid(Exception):  # noqa: N818 (a verdict, not an error: it becomes InvalidField or ConfigError)
    """A rule or a loader converter rejected a value.

    `sub` extends the key path (`[1]` for an array element, `[2].id` for a field of one); `also` is
    the sub-path of another element of the same array that the problem refers to (a duplicate).
    """

    def __init__(self, problem: str, sub: str = "", also: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.sub = sub
        self.also = also

    def render(self, key: str) -> tuple[str, str]:
        """The full key (`key` + `sub`) and the problem, for a field shown as `key`."""
        also = f" (also {key}{self.also})" if self.also is not None else ""
        return key + self.sub, self.problem + also


class InvalidField(ValueError):
    """A value that its settings dataclass rejects: `name` is the field, `invalid` says what is wrong."""

    def __init__(self, name: str, invalid: Invalid) -> None:
        key, problem = invalid.render(name)
        super().__init__(f"{key}: {problem}")
        self.name = name
        self.invalid = invalid


def num(value: float) -> str:
    """A number as written in the file: 100 rather than 100.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, got {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {value!r}")
    return value


# --- markers for the loader (not rules: not callable) ---------------------------------------------


class Required:
    """The file must set this key, although code may leave it at its default (`charger.id`)."""

    __slots__ = ()


class TomlKey:
    """The key's name in the file when it differs from the field's (`evses` is written `[[evse]]`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class ExistingFile:
    """A path that must name a readable file; checked by the loader, which alone touches the disk."""

    __slots__ = ()


class SecretFile:
    """A path to a file whose first line is the value of the field `into` (`mqtt.password_file` gives
    `mqtt.password`), so that a secret stays out of the config file. The loader reads it; the file may
    not set both keys."""

    __slots__ = ("into",)

    def __init__(self, into: str) -> None:
        self.into = into


# --- rules on one value ---------------------------------------------------------------------------


def between(lo: float, hi: float) -> Rule:
    """lo <= value <= hi (rejects NaN)."""

    def rule(value: object, owner: object) -> None:
        number = _number(value)
        if not lo <= number <= hi:
            raise Invalid(f"must be between {num(lo)} and {num(hi)}, got {num(number)}")

    return rule


def zero_or_between(lo: float, hi: float) -> Rule:
    """0 (off), or lo <= value <= hi."""

    def rule(value: object, owner: object) -> None:
        number = _number(value)
        if number != 0 and not lo <= number <= hi:
            raise Invalid(f"must be 0 or between {num(lo)} and {num(hi)}, got {num(number)}")

    return rule


def positive() -> Rule:
    """value > 0 (rejects NaN)."""

    def rule(value: object, owner: object) -> None:
        number = _number(value)
        if not number > 0:
            raise Invalid(f"must be > 0, got {num(number)}")

    return rule


def positive_integer() -> Rule:
    """An integer >= 1 (not a boolean)."""

    def rule(value: object, owner: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not value >= 1:
            raise Invalid(f"must be a positive integer, got {value!r}")

    return rule


def one_of(*choices: object) -> Rule:
    """One of a few values: "must be 1 or 3, got 2"."""
    *head, last = (repr(choice) for choice in choices)
    listed = f"{', '.join(head)} or {last}" if head else last

    def rule(value: object, owner: object) -> None:
        if value not in choices:
            raise Invalid(f"must be {listed}, got {value!r}")

    return rule


def non_empty(problem: str = "must not be empty") -> Rule:
    """A string or array with at least one element."""

    def rule(value: object, owner: object) -> None:
        if not isinstance(value, str | Sequence):
            raise Invalid(f"must be a string or an array, got {value!r}")
        if not value:
            raise Invalid(problem)

    return rule


def satisfies(test: Callable[[str], object], problem: str) -> Rule:
    """A string test of its own: `test(value)` false gives "{problem}, got {value!r}"."""

    def rule(value: object, owner: object) -> None:
        text = _text(value)
        if not test(text):
            raise Invalid(f"{problem}, got {text!r}")

    return rule


def each(element_rule: Rule) -> Rule:
    """A rule applied to every element of an array; the key path names the element (`connectors[1]`)."""

    def rule(value: object, owner: object) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise Invalid(f"must be an array, got {value!r}")
        for i, item in enumerate(value):
            try:
                element_rule(item, owner)
            except Invalid as exc:
                raise Invalid(exc.problem, f"[{i}]{exc.sub}", exc.also) from None

    return rule


def unique(attr: str, what: str) -> Rule:
    """No two elements of an array share the attribute `attr`: "duplicate EVSE id 1 (also evses[0])"."""

    def rule(value: object, owner: object) -> None:
        if not isinstance(value, Sequence):
            raise Invalid(f"must be an array, got {value!r}")
        first: dict[object, int] = {}
        for i, item in enumerate(value):
            key = getattr(item, attr)
            if key in first:
                raise Invalid(f"duplicate {what} {key}", f"[{i}].{attr}", f"[{first[key]}]")
            first[key] = i

    return rule


# --- rules that compare with other fields ---------------------------------------------------------


def _other(owner: object, path: str) -> object:
    """The value of another field, `poll_interval_s` or `meter.poll_interval_s`; None if unset."""
    value = owner
    for name in path.split("."):
        value = getattr(value, name)
        if value is None:
            return None
    return value


def needs_field(other: str, problem: str) -> Rule:
    """A value that is set (not None, not False) needs the field `other` set as well."""

    def rule(value: object, owner: object) -> None:
        if value is not False and _other(owner, other) is None:
            raise Invalid(problem)

    return rule


def only_when(other: str, expected: object, problem: str) -> Rule:
    """A value that is set (not None, not False) is only allowed while the field `other` == `expected`."""

    def rule(value: object, owner: object) -> None:
        if value is not False and _other(owner, other) != expected:
            raise Invalid(problem)

    return rule


def above_field(other: str, *, or_equal: bool = False) -> Rule:
    """value > the field `other` (>= with `or_equal`); skipped while that is unset.

    "must be greater than meter.poll_interval_s (1), got 0.5", "must be >= reconnect_min_s (2), got 1".
    """
    relation = ">=" if or_equal else "greater than"

    def rule(value: object, owner: object) -> None:
        number, bound = _number(value), _other(owner, other)
        if bound is None:
            return
        limit = _number(bound)
        if not (number >= limit if or_equal else number > limit):
            raise Invalid(f"must be {relation} {other} ({num(limit)}), got {num(number)}")

    return rule


# --- running the rules ----------------------------------------------------------------------------


_HINTS: dict[type, dict[str, object]] = {}
_FIELD_RULES: dict[type, tuple[tuple[str, tuple[Rule, ...]], ...]] = {}


def type_hints(cls: type) -> dict[str, object]:
    """`typing.get_type_hints(cls, include_extras=True)`, computed once per class (the schema uses it too)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def field_rules(cls: type) -> tuple[tuple[str, tuple[Rule, ...]], ...]:
    """The rules of each field of the settings dataclass `cls`, in declaration order (computed once)."""
    cached = _FIELD_RULES.get(cls)
    if cached is None:
        hints = type_hints(cls)
        found = ((f.name, getattr(hints[f.name], "__metadata__", ())) for f in fields(cls))  # Annotated extras
        cached = tuple((name, rules) for name, extras in found if (rules := tuple(e for e in extras if callable(e))))
        _FIELD_RULES[cls] = cached
    return cached


def check_fields(settings: object) -> None:
    """Run the rules of every field of the dataclass `settings`, in field order; `InvalidField` on the first failure."""
    for name, rules in field_rules(type(settings)):
        value = getattr(settings, name)
        if value is None:
            continue
        for rule in rules:
            try:
                rule(value, settings)
            except Invalid as exc:
                raise InvalidField(name, exc) from None
