"""Tag rules over a golang-like tag list: exactly what each rule selects, and its order;
and end to end, a rule over a registry's hostile tag list pinned by the real ``lock``."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from reconciler.oci.limits import NUMBER_DIGITS
from reconciler.tagrules import TagRule, TagVersion, describe, select, validate
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import run_cli, write_images

COSIGN_SIGNATURE_TAG = "sha256-" + "ab" * 32 + ".sig"
ARABIC_INDIC_99 = "\u0669\u0669.\u0660.\u0660"  # ٩٩.٠.٠: digits to str.isdigit, not to a version
ENDLESS_PATCH = "1.0." + "0" * 10_240  # past Python's 4,300-digit limit on int()
OTHER_DIGITS_AND_LONG_NUMBERS = (
    ARABIC_INDIC_99, "v1.\u0662\u0664.0", "\uff11.22.5", ENDLESS_PATCH, "1." + "9" * (NUMBER_DIGITS + 1),
    "1.22rc" + "1" * (NUMBER_DIGITS + 1), "1.0.0-rc." + "1" * 5_000,
)

TAGS = (
    "0.9.1", "0.10.0", "0.10.3",
    "1", "1.21", "1.21.13", "1.21.13-alpine",
    "1.22", "1.22.0", "1.22.5", "1.22.5-alpine", "1.22.5-alpine3.20", "1.22-alpine", "1.22-bookworm",
    "1.22.5-windowsservercore-ltsc2022",
    "1.23rc1", "1.23.0-rc.2", "1.23rc1-alpine", "1.23.0", "1.23.4", "1.23.4-alpine",
    "v1.24.0-rc.9", "v1.24.0-rc.10", "v1.24.0",
    "2.0.0-alpha", "2.0.0-beta.2",
    "latest", "bookworm", "alpine", "stable", "1.2.3.4", "1.x", COSIGN_SIGNATURE_TAG,
)

ALL_PLAIN_VERSIONS = ("v1.24.0", "1.23.4", "1.23.0", "1.22.5", "1.22", "1.22.0", "1.21.13", "1.21", "1",
                      "0.10.3", "0.10.0", "0.9.1")

SELECTIONS = [
    # semver ranges over plain versions
    (TagRule(semver=">=1.22 <1.24", latest=3), ("1.23.4", "1.23.0", "1.22.5")),
    (TagRule(semver=">=1.22 <1.24"), ("1.23.4", "1.23.0", "1.22.5", "1.22", "1.22.0")),
    (TagRule(semver=">= 1.22  < 1.24"), ("1.23.4", "1.23.0", "1.22.5", "1.22", "1.22.0")),
    (TagRule(semver=">=0"), ALL_PLAIN_VERSIONS),
    (TagRule(semver="^1.22"), ("v1.24.0", "1.23.4", "1.23.0", "1.22.5", "1.22", "1.22.0")),
    (TagRule(semver="~1.22"), ("1.22.5", "1.22", "1.22.0")),
    (TagRule(semver="~1.22.1"), ("1.22.5",)),
    (TagRule(semver="~1", latest=2), ("v1.24.0", "1.23.4")),
    (TagRule(semver="1.22"), ("1.22", "1.22.0")),
    (TagRule(semver="=1.22.5"), ("1.22.5",)),
    (TagRule(semver="v1.24.0"), ("v1.24.0",)),
    (TagRule(semver=">1.22"), ("v1.24.0", "1.23.4", "1.23.0", "1.22.5")),
    (TagRule(semver="<=1.21.13 || >=1.24"), ("v1.24.0", "1.21.13", "1.21", "1", "0.10.3", "0.10.0", "0.9.1")),
    (TagRule(semver="^0.10"), ("0.10.3", "0.10.0")),
    (TagRule(semver="^0.9.0"), ("0.9.1",)),
    (TagRule(semver="^0"), ("0.10.3", "0.10.0", "0.9.1")),
    (TagRule(semver=">=3"), ()),
    # variants
    (TagRule(semver=">=1.22", variant="alpine"), ("1.23.4-alpine", "1.22.5-alpine", "1.22-alpine")),
    (TagRule(semver=">=1", variant="alpine3.20"), ("1.22.5-alpine3.20",)),
    (TagRule(semver="^1", variant="windowsservercore-ltsc2022"), ("1.22.5-windowsservercore-ltsc2022",)),
    (TagRule(semver="^1", variant="bookworm"), ("1.22-bookworm",)),
    # pre-releases: only when asked for; a range compares their release numbers
    (TagRule(semver=">=1.23 <1.24", prerelease=True), ("1.23.4", "1.23.0", "1.23.0-rc.2", "1.23rc1")),
    (TagRule(semver=">=1.24", prerelease=True),
     ("2.0.0-beta.2", "2.0.0-alpha", "v1.24.0", "v1.24.0-rc.10", "v1.24.0-rc.9")),
    (TagRule(semver="<1.24", prerelease=True, latest=2), ("1.23.4", "1.23.0")),
    (TagRule(semver="^1.23", prerelease=True, variant="alpine"), ("1.23.4-alpine", "1.23rc1-alpine")),
    # exclude comes before latest
    (TagRule(semver=">=1.21", exclude=(r"^1\.22",)), ("v1.24.0", "1.23.4", "1.23.0", "1.21.13", "1.21")),
    (TagRule(semver=">=1.22 <1.24", latest=2, exclude=(r"^1\.23\.4$",)), ("1.23.0", "1.22.5")),
    (TagRule(semver="~1.22", exclude=(r"^\d+(\.\d+)?$",)), ("1.22.5", "1.22.0")),
    # regex rules: natural order, digit runs as numbers
    (TagRule(regex=r"^1\.2[0-9]\.[0-9]+$", latest=2), ("1.23.4", "1.23.0")),
    (TagRule(regex=r"^0\."), ("0.10.3", "0.10.0", "0.9.1")),
    (TagRule(regex=r"^v1\.24\."), ("v1.24.0-rc.10", "v1.24.0-rc.9", "v1.24.0")),
    (TagRule(regex=r"^1\.2[0-9]\.[0-9]+-alpine$"), ("1.23.4-alpine", "1.22.5-alpine", "1.21.13-alpine")),
    (TagRule(regex="alpine", exclude=("[0-9]",)), ("alpine",)),
    (TagRule(regex=r"^[a-z]+$", latest=3), ("stable", "latest", "bookworm")),
]

each_selection = pytest.mark.parametrize(("rule", "expected"), SELECTIONS, ids=[repr(rule) for rule, _ in SELECTIONS])


@each_selection
def test_rule_selects_exactly(rule, expected):
    validate(rule)
    assert select(rule, TAGS) == expected


@each_selection
def test_selection_ignores_listing_order_and_repeats(rule, expected):
    shuffler = random.Random(15)
    for _ in range(20):
        listing = list(TAGS) + shuffler.sample(TAGS, 5)
        shuffler.shuffle(listing)
        assert select(rule, iter(listing)) == expected


@pytest.mark.parametrize(
    ("tag", "version", "variant"),
    [
        ("1.21.13", "1.21.13", None),
        ("1.22", "1.22.0", None),
        ("1", "1.0.0", None),
        ("v1.24.0", "1.24.0", None),
        ("1.22.5-alpine", "1.22.5", "alpine"),
        ("1.22.5-alpine3.20", "1.22.5", "alpine3.20"),
        ("1.22-bookworm", "1.22.0", "bookworm"),
        ("1.23rc1", "1.23.0-rc.1", None),
        ("1.23.0-rc.2", "1.23.0-rc.2", None),
        ("v2.0.0-beta.2", "2.0.0-beta.2", None),
        ("1.22.0-alpha", "1.22.0-alpha", None),
        ("1.0.0.dev3", "1.0.0-dev.3", None),
        ("1.0.0-preview.1.2", "1.0.0-preview.1.2", None),
        ("1.0.0-rc1-alpine", "1.0.0-rc.1", "alpine"),
        ("1.0-devel", "1.0.0", "devel"),
        ("1.0.0-RC1", "1.0.0", "RC1"),
        ("1." + "9" * NUMBER_DIGITS, "1." + "9" * NUMBER_DIGITS + ".0", None),
        ("1.0.0-rc." + "9" * NUMBER_DIGITS, "1.0.0-rc." + "9" * NUMBER_DIGITS, None),
    ],
)
def test_tag_as_version(tag, version, variant):
    parsed = TagVersion.parse(tag)
    assert (str(parsed.version), parsed.variant) == (version, variant)


@pytest.mark.parametrize("tag", ["latest", "stable", "bookworm", "1.2.3.4", "1.x", "v", "1.", "1.22.", "V1.2",
                                 "1..2", "1.2-", COSIGN_SIGNATURE_TAG, "1" * 60 + "rc" + "1" * 60 + "!",
                                 *OTHER_DIGITS_AND_LONG_NUMBERS[:-1]])
def test_not_a_version(tag):
    assert TagVersion.parse(tag) is None


def test_a_pre_release_number_too_long_is_no_pre_release_but_a_variant():
    """``rc.`` and 5,000 digits is any other ``-suffix``: only a rule naming that variant could select it."""
    parsed = TagVersion.parse(OTHER_DIGITS_AND_LONG_NUMBERS[-1])
    assert (str(parsed.version), parsed.variant) == ("1.0.0", "rc." + "1" * 5_000)


SEMVER_SELECTIONS = [(rule, expected) for rule, expected in SELECTIONS if rule.semver is not None]


@pytest.mark.parametrize(("rule", "expected"), SEMVER_SELECTIONS, ids=[repr(rule) for rule, _ in SEMVER_SELECTIONS])
def test_a_semver_rule_never_selects_other_digits_or_numbers_too_long(rule, expected):
    assert select(rule, TAGS + OTHER_DIGITS_AND_LONG_NUMBERS) == expected


def test_a_regex_rule_orders_digit_runs_of_any_length_as_numbers():
    huge = "v1" + "0" * 10_000
    tags = ["v9", "v10", "v010", "v" + "9" * 9_999, huge, huge[:-1] + "1", "v0", "v"]
    assert select(TagRule(regex="^v"), tags) == (huge[:-1] + "1", huge, "v" + "9" * 9_999, "v010", "v10", "v9",
                                                   "v0", "v")


def test_versions_order_as_semver_precedence():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc1", "1.0.0"]
    assert sorted(reversed(ordered), key=lambda tag: TagVersion.parse(tag).version) == ordered


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (TagRule(), "a tag rule needs exactly one of semver (a version range) or regex"),
        (TagRule(semver=">=1", regex="^1"), "a tag rule needs exactly one of semver (a version range) or regex"),
        (TagRule(semver=">=1", latest=0), "latest must be 1 or more (the number of highest tags to keep), got 0"),
        (TagRule(regex="^1", latest=-2), "latest must be 1 or more (the number of highest tags to keep), got -2"),
        (TagRule(regex="(v1"), "invalid regex pattern '(v1': missing ), unterminated subpattern at position 0"),
        (TagRule(semver=">=1", exclude=("ok", "[a-")),
         "invalid exclude pattern '[a-': unterminated character set at position 0"),
        (TagRule(regex="^1", variant="alpine"),
         "variant applies to semver rules only: a regex rule selects the tags its regex finds"),
        (TagRule(regex="^1", prerelease=True),
         "prerelease applies to semver rules only: a regex rule selects the tags its regex finds"),
        (TagRule(semver=">=1", variant="-alpine"),
         "variant '-alpine' is not a tag suffix such as alpine (write it without the dash)"),
        (TagRule(semver="1.x"),
         "invalid semver range '1.x': '1.x' is not a comparator such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
        (TagRule(semver=">=1.22 <1.2.3.4"),
         "invalid semver range '>=1.22 <1.2.3.4': '<1.2.3.4' is not a comparator"
         " such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
        (TagRule(semver=">=1.0.0-rc.1"),
         "invalid semver range '>=1.0.0-rc.1': '>=1.0.0-rc.1' is not a comparator"
         " such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
        (TagRule(semver="1.2 - 1.4"),
         "invalid semver range '1.2 - 1.4': '-' is not a comparator such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
        (TagRule(semver=">=1.22 ||"),
         "invalid semver range '>=1.22 ||': it needs a comparator such as >=1.22 on each side of ||"),
        (TagRule(semver=""), "invalid semver range '': it needs a comparator such as >=1.22 on each side of ||"),
        (TagRule(semver=f">={ARABIC_INDIC_99}"),
         f"invalid semver range '>={ARABIC_INDIC_99}': '>={ARABIC_INDIC_99}' is not a comparator"
         " such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
        (TagRule(semver="^1." + "0" * 10_240), "invalid semver range '^1." + "0" * 10_240 + "': '^1." + "0" * 10_240
         + "' is not a comparator such as >=1.22, <1.24, =1.22.5, ~1.22 or ^1.22"),
    ],
)
def test_malformed_rules_are_refused_in_one_line(rule, message):
    with pytest.raises(ValueError) as refused:
        validate(rule)
    assert str(refused.value) == message
    with pytest.raises(ValueError):
        select(rule, TAGS)


@pytest.mark.parametrize(
    ("rule", "description"),
    [
        (TagRule(semver=">=1.22 <1.24", latest=3), '{semver: ">=1.22 <1.24", latest: 3}'),
        (TagRule(regex=r"^v1\.15\.[0-9]+$"), r'{regex: "^v1\\.15\\.[0-9]+$"}'),
        (TagRule(semver="^1", exclude=("rc", "ü, \"x\""), variant="alpine", prerelease=True),
         r'{semver: "^1", exclude: ["rc", "ü, \"x\""], variant: "alpine", prerelease: true}'),
    ],
)
def test_description_reads_back_as_the_rule(rule, description):
    assert describe(rule) == description
    assert TagRule(**{key: tuple(value) if key == "exclude" else value
                      for key, value in yaml.safe_load(description).items()}) == rule


def test_lock_pins_the_ascii_versions_of_a_tag_list_with_other_digits_and_endless_numbers(
    push_image, plain_registry, second_plain_registry, fault_proxy, unique_repo, tmp_path
):
    """The registry lists ٩٩.٠.٠ and 1.0. with 10,240 zeros beside real releases: neither is a version."""
    pushed = push_image("oci", tag="1.0.0")
    with RawRegistry(plain_registry) as raw:
        for tag in ("1.2.0", "2.0.0"):
            assert raw.put_manifest(pushed.repo, tag, pushed.manifest, pushed.media_type).status_code == 201
    source = fault_proxy(plain_registry)
    listing = {"name": pushed.repo, "tags": ["1.0.0", "1.2.0", "2.0.0", "latest", *OTHER_DIGITS_AND_LONG_NUMBERS]}
    source.fail("GET", "/tags/list", 200, times=None, body=json.dumps(listing),
                headers={"Content-Type": "application/json"})
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{pushed.repo}", "tags": {"semver": ">=1", "latest": 2}}])

    locked = run_cli(tmp_path, "lock")

    assert locked.code == 0, str(locked)
    assert "Traceback" not in locked.stderr
    pins = yaml.safe_load((tmp_path / "images.lock").read_text())["images"]
    assert [pin["source"] for pin in pins] == [f"{source.host}/{pushed.repo}:{tag}" for tag in ("1.2.0", "2.0.0")]
    assert {pin["digest"] for pin in pins} == {pushed.digest}
