"""Validation rules attached to settings fields, and the check that runs them (API.md §9).

A settings field is declared once, with its rules in its annotation:

    max_current_a: Annotated[float, Between(MIN_CURRENT_A, MAX_CURRENT_A)] = 32.0

`check_fields(self)`, called from each settings dataclass's `__post_init__`, runs the rules of every
field in declaration order and raises `InvalidField` (a `ValueError`) naming the field and the
problem, so that a settings object built in code is checked exactly like one read from the file. The
loader (`loader.py`) reads the same annotations for what only the file can tell: `Required` (the file
must set a key that code may leave at its default), `TomlKey` (the key's name in the file) and
`ExistingFile` (a path that must name a readable file).

Rules never do I/O and never convert: they get the value as the dataclass holds it and either
return or raise `Invalid`. A value of `None` means "not set" and is never checked. Messages follow
the project's config error style: "must be between 6 and 80, got 100" (numbers written as in the
file, 100 rather than 100.0; strings with repr()).

Standard: STYLE.md B6 (frozen dataclasses validated in `__post_init__` with ValueError), mypy --strict.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

__all__ = [
    "AboveField",
    "Between",
    "Check",
    "Each",
    "ExistingFile",
    "Invalid",
    "InvalidField",
    "NeedsField",
    "NonEmpty",
    "OneOf",
    "OnlyWhen",
    "Positive",
    "PositiveInteger",
    "Required",
    "Rule",
    "TomlKey",
    "Unique",
    "ZeroOrBetween",
    "check_fields",
    "num",
]


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


class Rule(Protocol):
    """A check of one field's value; `owner` is the settings object, for rules that compare fields."""

    def __call__(self, value: object, owner: object) -> None: ...


# --- markers for the loader (not rules) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Required:
    """The file must set this key, although code may leave it at its default (`charger.id`)."""


@dataclass(frozen=True, slots=True)
class TomlKey:
    """The key's name in the file when it differs from the field's (`evses` is written `[[evse]]`)."""

    name: str


@dataclass(frozen=True, slots=True)
class ExistingFile:
    """A path that must name a readable file; checked by the loader, which alone touches the disk."""


# --- rules on one value ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Between:
    """lo <= value <= hi (rejects NaN)."""

    lo: float
    hi: float

    def __call__(self, value: object, owner: object) -> None:
        number = _number(value)
        if not self.lo <= number <= self.hi:
            raise Invalid(f"must be between {num(self.lo)} and {num(self.hi)}, got {num(number)}")


@dataclass(frozen=True, slots=True)
class ZeroOrBetween:
    """0 (off), or lo <= value <= hi."""

    lo: float
    hi: float

    def __call__(self, value: object, owner: object) -> None:
        number = _number(value)
        if number != 0 and not self.lo <= number <= self.hi:
            raise Invalid(f"must be 0 or between {num(self.lo)} and {num(self.hi)}, got {num(number)}")


@dataclass(frozen=True, slots=True)
class Positive:
    """value > 0 (rejects NaN)."""

    def __call__(self, value: object, owner: object) -> None:
        number = _number(value)
        if not number > 0:
            raise Invalid(f"must be > 0, got {num(number)}")


@dataclass(frozen=True, slots=True)
class PositiveInteger:
    """An integer >= 1 (not a boolean)."""

    def __call__(self, value: object, owner: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not value >= 1:
            raise Invalid(f"must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class OneOf:
    """One of a few values: "must be 1 or 3, got 2"."""

    choices: tuple[object, ...]

    def __call__(self, value: object, owner: object) -> None:
        if value not in self.choices:
            *head, last = (repr(choice) for choice in self.choices)
            listed = f"{', '.join(head)} or {last}" if head else last
            raise Invalid(f"must be {listed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class NonEmpty:
    """A string or array with at least one element."""

    problem: str = "must not be empty"

    def __call__(self, value: object, owner: object) -> None:
        if not isinstance(value, str | Sequence):
            raise Invalid(f"must be a string or an array, got {value!r}")
        if not value:
            raise Invalid(self.problem)


@dataclass(frozen=True, slots=True)
class Check:
    """A string test of its own: `test(value)` false gives "{problem}, got {value!r}"."""

    test: Callable[[str], object]
    problem: str

    def __call__(self, value: object, owner: object) -> None:
        text = _text(value)
        if not self.test(text):
            raise Invalid(f"{self.problem}, got {text!r}")


@dataclass(frozen=True, slots=True)
class Each:
    """A rule applied to every element of an array; the key path names the element (`connectors[1]`)."""

    rule: Rule

    def __call__(self, value: object, owner: object) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise Invalid(f"must be an array, got {value!r}")
        for i, item in enumerate(value):
            try:
                self.rule(item, owner)
            except Invalid as exc:
                raise Invalid(exc.problem, f"[{i}]{exc.sub}", exc.also) from None


@dataclass(frozen=True, slots=True)
class Unique:
    """No two elements of an array share the attribute `attr`: "duplicate EVSE id 1 (also evses[0])"."""

    attr: str
    what: str

    def __call__(self, value: object, owner: object) -> None:
        if not isinstance(value, Sequence):
            raise Invalid(f"must be an array, got {value!r}")
        first: dict[object, int] = {}
        for i, item in enumerate(value):
            key = getattr(item, self.attr)
            if key in first:
                raise Invalid(f"duplicate {self.what} {key}", f"[{i}].{self.attr}", f"[{first[key]}]")
            first[key] = i


# --- rules that compare with other fields ---------------------------------------------------------


def _other(owner: object, path: str) -> object:
    """The value of another field, `poll_interval_s` or `meter.poll_interval_s`; None if unset."""
    value = owner
    for name in path.split("."):
        value = getattr(value, name)
        if value is None:
            return None
    return value


@dataclass(frozen=True, slots=True)
class NeedsField:
    """A value that is set (not None, not False) needs the field `other` set as well."""

    other: str
    problem: str

    def __call__(self, value: object, owner: object) -> None:
        if value is not False and _other(owner, self.other) is None:
            raise Invalid(self.problem)


@dataclass(frozen=True, slots=True)
class OnlyWhen:
    """A value that is set (not None, not False) is only allowed while the field `other` == `expected`."""

    other: str
    expected: object
    problem: str

    def __call__(self, value: object, owner: object) -> None:
        if value is not False and _other(owner, self.other) != self.expected:
            raise Invalid(self.problem)


@dataclass(frozen=True, slots=True)
class AboveField:
    """value > the field `other` (>= with `or_equal`); skipped while that is unset.

    "must be greater than meter.poll_interval_s (1), got 0.5", "must be >= reconnect_min_s (2), got 1".
    """

    other: str
    or_equal: bool = False

    def __call__(self, value: object, owner: object) -> None:
        number, bound = _number(value), _other(owner, self.other)
        if bound is None:
            return
        limit = _number(bound)
        if not (number >= limit if self.or_equal else number > limit):
            relation = ">=" if self.or_equal else "greater than"
            raise Invalid(f"must be {relation} {self.other} ({num(limit)}), got {num(number)}")


# --- running the rules ----------------------------------------------------------------------------


_FIELD_RULES: dict[type, tuple[tuple[str, tuple[Rule, ...]], ...]] = {}


def field_rules(cls: type) -> tuple[tuple[str, tuple[Rule, ...]], ...]:
    """The rules of each field of the settings dataclass `cls`, in declaration order (computed once)."""
    cached = _FIELD_RULES.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls, include_extras=True)
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
