"""Tag rules: which of a repository's tags an images.yaml entry mirrors.

An entry may name a rule instead of one tag; ``lock`` lists the source's tags,
applies the rule and pins each selected tag on its own.

    tags: {semver: ">=1.22 <1.24", latest: 3}        # the 3 highest 1.22.x/1.23.x releases
    tags: {semver: "^1.22", variant: alpine}         # every 1.x.y-alpine from 1.22 on
    tags: {semver: "~1.23", prerelease: true}        # 1.23.x, release candidates too
    tags: {regex: "^v1\\.15\\.[0-9]+$", latest: 2}   # the 2 highest matching tags
    tags: {semver: ">=1.21", exclude: ["^1\\.22\\."]}  # drop any tag a pattern finds

Tags as versions. A tag is a version when it is an optional ``v``, then one to three
numbers separated by dots (missing ones count as 0: ``1.23`` is 1.23.0, ``1`` is 1.0.0),
then optionally a pre-release, then optionally a variant:

- a pre-release is ``alpha``, ``beta``, ``rc``, ``pre``, ``preview`` or ``dev``, after an
  optional ``-`` or ``.``, followed by optional numbers: ``1.0.0-rc.1``, ``v2.0.0-beta.2``,
  ``1.22rc1``, ``1.22.0-alpha``;
- a variant is any other ``-suffix``: ``1.22.5-alpine``, ``1.22-bookworm``,
  ``1.22.5-alpine3.20``; both may come together, pre-release first: ``1.0.0-rc1-alpine``.

A number is ASCII digits ``0``-``9``, at most 18 of them (``limits.NUMBER_DIGITS``, as many as always
fit in 64 bits; a timestamp such as ``20260101123045`` has 14). Any other tag
(``latest``, ``stable``, ``bookworm``, ``1.2.3.4``, ``1.x``, ``٩٩.٠.٠`` in Arabic-Indic
digits, ``1.0.`` and 19 digits) is not a version, and a semver rule never selects it.
Pre-release words are lowercase: ``1.0.0-RC1`` has the variant ``RC1``.

Semver rules. ``semver:`` is a range: comparators ``>=``, ``>``, ``<=``, ``<`` and ``=``
(or a bare version, which means exactly that version) with one to three numbers, written
and padded with zeros as tags are (``>1.22`` is above 1.22.0, so 1.22.1 is in; ``<1.24``
stops before 1.24.0). Comparators separated by spaces must all hold; ``||`` separates
alternatives, one of which must hold: ``>=1.21 <1.22 || >=1.23``. ``~1.22`` is ``>=1.22.0 <1.23.0``
(``~1`` is ``>=1.0.0 <2.0.0``); ``^1.22`` is ``>=1.22.0 <2.0.0``, and below 1.0.0 the first
non-zero number given may not change, as in npm: ``^0.3`` is ``>=0.3.0 <0.4.0``.
A rule selects plain versions only; with ``variant: alpine`` it selects only the tags whose
variant is exactly ``alpine`` (not ``alpine3.20``). Pre-releases are left out unless
``prerelease: true``; a range then compares their numbers alone, so a pre-release belongs
to the release it precedes: ``>=1.23`` takes ``1.23rc1``, ``<1.24`` leaves out ``1.24.0-rc.1``.

Regex rules. ``regex:`` keeps every tag it finds (Python ``re.search``: anchor it with
``^…$`` to match whole tags); ``variant`` and ``prerelease`` do not apply.

Both kinds. ``exclude:`` drops every tag one of its regexes finds (``re.search``), before
``latest: N`` keeps the N highest of what remains. Selections are listed highest first.
Semver rules order versions as SemVer 2.0 does (``1.0.0-rc.1 < 1.0.0-rc.2 < 1.0.0``;
pre-release words alphabetically, their numbers as numbers), tags of equal versions
(``1.22``, ``1.22.0``, ``v1.22.0``) by the tag itself; regex rules order tags naturally: runs
of ASCII digits compare as numbers, however long (``v1.15.10`` above ``v1.15.9``). The result
depends on the set of tags only, never on the order the registry lists them in.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterable

import attrs
import semver

from reconciler.oci.limits import NUMBER_DIGITS

# A longer run of digits (or any digit but ASCII's) makes a tag no version.
_NUMBER = f"[0-9]{{1,{NUMBER_DIGITS}}}"
_TAG_VERSION = re.compile(
    rf"""v?(?P<major>{_NUMBER})(?:\.(?P<minor>{_NUMBER}))?(?:\.(?P<patch>{_NUMBER}))?
    (?:[-.]?(?P<prerelease>alpha|beta|rc|preview|pre|dev)(?P<prerelease_numbers>(?:{_NUMBER})?(?:\.{_NUMBER})*))?
    (?:-(?P<variant>[A-Za-z0-9_.-]+))?""",
    re.VERBOSE,
)
_PRERELEASE_NUMBER = re.compile(_NUMBER)
_VARIANT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_COMPARATOR = re.compile(rf"(?P<operator>>=|<=|>|<|=|~|\^)?v?(?P<numbers>{_NUMBER}(?:\.{_NUMBER}){{0,2}})")
_SPACE_AFTER_OPERATOR = re.compile(r"(>=|<=|>|<|=|~|\^)\s+")
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_OPERATORS = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq, None: operator.eq,
}
_CACHED_RULES = 256

Release = tuple[int, int, int]


@attrs.frozen
class TagRule:
    """Which tags of a source to mirror: a semver range or a regex, narrowed by the rest."""

    semver: str | None = None
    regex: str | None = None
    latest: int | None = None
    """Keep only the N highest tags selected."""
    exclude: tuple[str, ...] = ()
    """Regexes: a tag any of them finds is never selected."""
    variant: str | None = None
    prerelease: bool = False


@attrs.frozen
class TagVersion:
    """What a tag says as a version: its number, pre-release included, and its variant."""

    version: semver.Version
    variant: str | None

    @classmethod
    def parse(cls, tag: str) -> TagVersion | None:
        """None for a tag that is not a version (``latest``, ``1.2.3.4``)."""
        match = _TAG_VERSION.fullmatch(tag)
        if match is None:
            return None
        word = match["prerelease"]
        prerelease = ".".join([word, *_PRERELEASE_NUMBER.findall(match["prerelease_numbers"])]) if word else None
        return cls(
            semver.Version(int(match["major"]), int(match["minor"] or 0), int(match["patch"] or 0), prerelease),
            match["variant"],
        )

    @property
    def release(self) -> Release:
        return (self.version.major, self.version.minor, self.version.patch)


@attrs.frozen
class _Bound:
    holds: Callable[[Release, Release], bool]
    release: Release

    def admits(self, release: Release) -> bool:
        return self.holds(release, self.release)


@attrs.frozen
class _Range:
    """Alternatives (``||``), each a set of bounds that must all hold, over release numbers."""

    alternatives: tuple[tuple[_Bound, ...], ...]

    @classmethod
    def parse(cls, text: str) -> _Range:
        alternatives = tuple(
            tuple(bound for comparator in _SPACE_AFTER_OPERATOR.sub(r"\1", alternative).split()
                  for bound in _bounds(text, comparator))
            for alternative in text.split("||")
        )
        if not all(alternatives):
            raise ValueError(f"invalid semver range {text!r}: it needs a comparator such as >=1.22 on each side of ||")
        return cls(alternatives)

    def admits(self, release: Release) -> bool:
        return any(all(bound.admits(release) for bound in bounds) for bounds in self.alternatives)


def _bounds(text: str, comparator: str) -> tuple[_Bound, ...]:
    match = _COMPARATOR.fullmatch(comparator)
    if match is None:
        raise ValueError(
            f"invalid semver range {text!r}: {comparator!r} is not a comparator"
            " such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"
        )
    given = [int(number) for number in match["numbers"].split(".")]
    lowest: Release = tuple(given + [0] * (3 - len(given)))
    sign = match["operator"]
    if sign in _OPERATORS:
        return (_Bound(_OPERATORS[sign], lowest),)
    return (_Bound(operator.ge, lowest), _Bound(operator.lt, _tilde_end(given) if sign == "~" else _caret_end(given)))


def _tilde_end(given: list[int]) -> Release:
    """``~1.22.3`` and ``~1.22`` stay below 1.23.0; ``~1`` below 2.0.0."""
    return _next(given[:2])


def _caret_end(given: list[int]) -> Release:
    """npm's caret: the first non-zero number given stays (the last one given when all are 0)."""
    fixed = next((index for index, number in enumerate(given) if number), len(given) - 1)
    return _next(given[: fixed + 1])


def _next(prefix: list[int]) -> Release:
    """The first release after every one that starts with ``prefix``."""
    bumped = [*prefix[:-1], prefix[-1] + 1]
    return tuple(bumped + [0] * (3 - len(bumped)))


@attrs.frozen
class _CompiledRule:
    rule: TagRule
    semver_range: _Range | None
    regex: re.Pattern[str] | None
    exclude: tuple[re.Pattern[str], ...]

    def select(self, tags: Iterable[str]) -> tuple[str, ...]:
        # Sorted first, so that tags of equal rank keep the order of the tag strings.
        kept = [tag for tag in sorted(set(tags)) if not any(pattern.search(tag) for pattern in self.exclude)]
        if self.semver_range is not None:
            versions = {tag: TagVersion.parse(tag) for tag in kept}
            chosen = sorted((tag for tag, version in versions.items() if self._admits(version)),
                            key=lambda tag: versions[tag].version, reverse=True)
        else:
            chosen = sorted((tag for tag in kept if self.regex.search(tag)), key=_natural_key, reverse=True)
        return tuple(chosen[: self.rule.latest])

    def _admits(self, version: TagVersion | None) -> bool:
        return (
            version is not None
            and version.variant == self.rule.variant
            and (self.rule.prerelease or version.version.prerelease is None)
            and self.semver_range.admits(version.release)
        )


def _natural_key(tag: str) -> tuple[str | tuple[int, str], ...]:
    """Digit runs as numbers: they fall at odd positions of the split, so like is compared with like.

    A run is never converted to an int: a registry may list a tag of any length.
    """
    return tuple(_run_value(piece) if position % 2 else piece for position, piece in enumerate(_DIGIT_RUNS.split(tag)))


def _run_value(digits: str) -> tuple[int, str]:
    """A number's order without converting it: fewer significant digits first, then digit by digit."""
    significant = digits.lstrip("0")
    return (len(significant), significant)


def validate(rule: TagRule) -> None:
    """Raise ValueError, one line a user can act on, for a malformed rule; images.yaml names its line."""
    _compile(rule)


def describe(rule: TagRule) -> str:
    """The rule in images.yaml's own words, one line, defaults left out: ``{semver: ">=1.22", latest: 3}``.

    The lock records it beside each tag the rule brought; as YAML it reads back as the rule.
    """
    written = [
        f"{field.name}: {json.dumps(value, ensure_ascii=False)}"
        for field in attrs.fields(TagRule)
        if (value := getattr(rule, field.name)) != field.default
    ]
    return "{" + ", ".join(written) + "}"


def select(rule: TagRule, tags: Iterable[str]) -> tuple[str, ...]:
    """The tags ``rule`` selects, highest first (see the module docstring for the order)."""
    return _compile(rule).select(tags)


def admits(rule: TagRule, tag: str) -> bool:
    """Whether ``rule`` selects ``tag`` from any list holding it, ``latest`` aside: what can be
    checked of a pinned tag without listing the repository again."""
    return bool(_compile(attrs.evolve(rule, latest=None)).select([tag]))


@functools.lru_cache(maxsize=_CACHED_RULES)
def _compile(rule: TagRule) -> _CompiledRule:
    """Every regex and range of a rule parsed once, however many repositories it is applied to."""
    if (rule.semver is None) == (rule.regex is None):
        raise ValueError("a tag rule needs exactly one of semver (a version range) or regex")
    if rule.latest is not None and rule.latest < 1:
        raise ValueError(f"latest must be 1 or more (the number of highest tags to keep), got {rule.latest}")
    if rule.regex is not None:
        for key, value in (("variant", rule.variant is not None), ("prerelease", rule.prerelease)):
            if value:
                raise ValueError(f"{key} applies to semver rules only: a regex rule selects the tags its regex finds")
    if rule.variant is not None and not _VARIANT.fullmatch(rule.variant):
        raise ValueError(f"variant {rule.variant!r} is not a tag suffix such as alpine (write it without the dash)")
    return _CompiledRule(
        rule=rule,
        semver_range=_Range.parse(rule.semver) if rule.semver is not None else None,
        regex=_regex("regex", rule.regex) if rule.regex is not None else None,
        exclude=tuple(_regex("exclude", pattern) for pattern in rule.exclude),
    )


def _regex(key: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid {key} pattern {pattern!r}: {error}") from None
