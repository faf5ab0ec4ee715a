"""reconciler/resolve.py: a source to its pin, against a real docker-registry.

What one entry pins (a single image, an index, required platforms, a platform subset) and what it
refuses; which images a tag rule selects and when its tags are listed at all; a target both a
rule and an entry claim; and a repository's tags listed once however many ask.
(Media types a HEAD may or may not name are in test_media_types.py; signatures in test_cosign.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import config
from reconciler.config import Config
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci import mediatypes
from reconciler.oci.digest import Digest
from reconciler.oci.platforms import PlatformSubset
from reconciler.registry.errors import RegistryError
from reconciler.resolve import (
    SourceUnusable,
    TagListings,
    Unselected,
    _shared_targets,
    resolve,
    resolve_all,
    select_tags,
)
from tests.helpers_clients import registries, run

PREFIX = "mirror.example/m/"
INDEX_PLATFORMS = ("linux/amd64", "linux/arm64/v8")
NO_REFERRERS = "referrers: false"


def load(tmp_path: Path, *entries: str, top: str = "") -> Config:
    """images.yaml of ``entries`` (each a flow mapping, or a quoted source alone), mirrored to PREFIX."""
    mappings = [entry if entry.startswith("{") else f"{{source: {entry}}}" for entry in entries]
    text = f'targetRepoPrefix: "{PREFIX}"\n{top}images:\n' + "".join(f"- {entry}\n" for entry in mappings)
    (tmp_path / "images.yaml").write_text(text)
    return config.load(tmp_path / "images.yaml")


def source(pushed, tag: str | None = None) -> str:
    return f"{pushed.host}/{pushed.repo}:{tag or pushed.tag}"


def resolve_only(loaded: Config) -> LockedImage:
    """The pin of the file's one entry."""
    (desired,) = loaded.desired

    async def main():
        async with registries() as regs:
            return await resolve(regs, TagListings(regs), desired)

    return run(main())


def refusal_of(loaded: Config) -> str:
    with pytest.raises(RegistryError) as raised:
        resolve_only(loaded)
    return str(raised.value)


# --- one entry ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_a_single_image_is_pinned_to_its_digest_with_no_platforms(tmp_path, push_image, kind):
    pushed = push_image(kind)
    loaded = load(tmp_path, f'"{source(pushed)}"')

    pin = resolve_only(loaded)

    assert pin == LockedImage(loaded.desired[0].source, loaded.desired[0].target, Digest.parse(pushed.digest),
                              pushed.media_type, ())


@pytest.mark.parametrize("kind", ["oci-index", "docker-list"])
def test_an_index_is_pinned_with_the_platforms_it_holds(tmp_path, push_image, kind):
    pushed = push_image(kind)

    pin = resolve_only(load(tmp_path, f'"{source(pushed)}"'))

    assert (str(pin.digest), pin.media_type, pin.platforms, pin.subset) == (
        pushed.digest, pushed.media_type, INDEX_PLATFORMS, None)


def test_required_platforms_an_index_holds_pin_the_whole_index(tmp_path, push_image):
    pushed = push_image("oci-index")

    pin = resolve_only(load(tmp_path, f'{{source: "{source(pushed)}", platforms: [linux/arm64]}}'))

    assert str(pin.digest) == pushed.digest
    assert pin.platforms == INDEX_PLATFORMS


def test_a_required_platform_the_index_lacks_is_refused_naming_what_it_has(tmp_path, push_image):
    pushed = push_image("oci-index")
    loaded = load(tmp_path, f'{{source: "{source(pushed)}", platforms: [linux/amd64, linux/s390x]}}')

    message = refusal_of(loaded)

    assert message == (f"{source(pushed)} ({pushed.digest}) does not provide platform(s) linux/s390x; "
                       f"it has {', '.join(INDEX_PLATFORMS)}")


def test_a_single_image_with_required_platforms_is_pinned_with_its_configs_platform(tmp_path, push_image):
    """A single image lists no platforms, so its config is read to know whether it is the one asked for."""
    pushed = push_image("oci")

    pin = resolve_only(load(tmp_path, f'{{source: "{source(pushed)}", platforms: [linux/amd64]}}'))
    assert (str(pin.digest), pin.platforms) == (pushed.digest, ("linux/amd64",))

    assert refusal_of(load(tmp_path, f'{{source: "{source(pushed)}", platforms: [linux/arm64]}}')).endswith(
        "does not provide platform(s) linux/arm64; it has linux/amd64")


def test_a_platform_subset_pins_the_source_index_and_the_subsets_own_digest(tmp_path, push_image):
    pushed = push_image("oci-index")
    loaded = load(tmp_path, f'{{source: "{source(pushed)}", platforms: {{only: [linux/amd64]}}, {NO_REFERRERS}}}')

    pin = resolve_only(loaded)

    assert str(pin.digest) == pushed.digest
    assert pin.subset is not None and pin.subset.platforms == ("linux/amd64",)
    assert str(pin.subset.digest) != pushed.digest
    assert pin.pushed_digest == pin.subset.digest


def test_two_subsets_of_one_index_have_different_digests_and_the_same_subset_the_same(tmp_path, push_image):
    """The subset's digest is what lock --check compares: it must be a function of the platforms kept."""
    pushed = push_image("oci-index")

    def subset(platform: str) -> PlatformSubset | None:
        entry = f'{{source: "{source(pushed)}", platforms: {{only: [{platform}]}}, {NO_REFERRERS}}}'
        return resolve_only(load(tmp_path, entry)).subset

    amd64, arm64, amd64_again = subset("linux/amd64"), subset("linux/arm64/v8"), subset("linux/amd64")
    assert amd64 == amd64_again
    assert amd64.digest != arm64.digest


def test_a_subset_of_a_single_image_is_refused(tmp_path, push_image):
    pushed = push_image("oci")
    message = refusal_of(load(tmp_path, f'{{source: "{source(pushed)}", platforms: {{only: [linux/amd64]}}}}'))
    assert message.startswith(f"{source(pushed)}: ")


def test_a_subset_naming_a_platform_the_index_lacks_is_refused(tmp_path, push_image):
    pushed = push_image("oci-index")
    loaded = load(tmp_path, f'{{source: "{source(pushed)}", platforms: {{only: [linux/ppc64le]}}}}')
    with pytest.raises(SourceUnusable):
        resolve_only(loaded)


def test_a_tag_that_does_not_exist_is_not_found(tmp_path, push_image):
    pushed = push_image("oci")
    missing = source(pushed, "absent")
    assert refusal_of(load(tmp_path, f'"{missing}"')) == f"{missing}: not found at {pushed.host}/{pushed.repo}"


def test_resolve_all_pins_what_it_can_and_gives_one_line_per_failed_target(tmp_path, push_image):
    good, other = push_image("oci"), push_image("oci-index")
    loaded = load(tmp_path, f'"{source(good)}"', f'"{source(other, "gone")}"')

    async def main():
        async with registries() as regs:
            return await resolve_all(regs, TagListings(regs), list(loaded.desired))

    resolved, errors = run(main())

    by_source = {str(image.source): image.target for image in loaded.desired}
    assert list(resolved) == [by_source[source(good)]]
    assert list(errors) == [by_source[source(other, "gone")]]
    assert "\n" not in errors[by_source[source(other, "gone")]]


# --- tag rules ------------------------------------------------------------------------------


def push_tags(push_image, *tags: str, kind: str = "oci"):
    """One repository holding ``kind`` under every tag; the last push is returned."""
    first = push_image(kind, tag=tags[0])
    for tag in tags[1:]:
        push_image(kind, repo=first.repo, tag=tag)
    return first


def rule_entry(pushed, rule: str) -> str:
    return f'{{source: "{pushed.host}/{pushed.repo}", tags: {rule}, {NO_REFERRERS}}}'


EMPTY_LOCK = Lockfile(inputs_hash="sha256:" + "0" * 64, images=())


def select(loaded: Config, lock: Lockfile = EMPTY_LOCK, upgraded=lambda rule: False):
    async def main():
        async with registries() as regs:
            return await select_tags(regs, TagListings(regs), loaded, lock, upgraded)

    return run(main())


def test_a_new_rule_lists_the_tags_and_selects_one_image_per_tag_it_matches(tmp_path, push_image):
    pushed = push_tags(push_image, "1.0.0", "1.1.0", "1.2.0", "2.0.0", "latest")
    loaded = load(tmp_path, rule_entry(pushed, '{semver: "^1.0", latest: 2}'))

    selected, errors = select(loaded)

    assert errors == []
    assert [(str(image.source), str(image.target)) for image in selected] == [
        (source(pushed, tag), f"{PREFIX}{pushed.host.replace(':', '_')}/{pushed.repo}:{tag}")
        for tag in ("1.1.0", "1.2.0")]
    assert {image.rule for image in selected} == {'{semver: "^1.0", latest: 2}'}


def test_a_rule_that_selects_nothing_says_how_many_tags_it_saw(tmp_path, push_image):
    pushed = push_tags(push_image, "1.0.0", "latest")
    loaded = load(tmp_path, rule_entry(pushed, '{semver: ">=3"}'))

    selected, errors = select(loaded)

    assert selected == []
    assert [error.message for error in errors] == ['tag rule {semver: ">=3"} selects none of its 2 tags']


def test_a_rule_whose_repository_is_missing_is_unselected_not_raised(tmp_path, plain_registry, unique_repo):
    loaded = load(tmp_path, f'{{source: "{plain_registry.host}/{unique_repo()}", tags: {{semver: "^1"}}}}')

    selected, errors = select(loaded)

    assert selected == []
    assert [(str(error.source), len(error.message.splitlines())) for error in errors] == [
        (str(loaded.tag_rules[0].source), 1)]


def test_a_rule_the_lock_pinned_is_not_listed_again_until_upgraded(tmp_path, push_image, fault_proxy, plain_registry):
    """A rule's tags list can be hundreds of pages; lock lists it only when asked to move on."""
    pushed = push_tags(push_image, "1.0.0", "1.1.0")
    proxy = fault_proxy(plain_registry)
    loaded = load(tmp_path, f'{{source: "{proxy.host}/{pushed.repo}", tags: {{semver: "^1"}}, {NO_REFERRERS}}}')
    rule = loaded.tag_rules[0]
    lock = Lockfile(inputs_hash=EMPTY_LOCK.inputs_hash, images=(
        LockedImage(rule.image("1.0.0").source, rule.image("1.0.0").target, Digest.parse(pushed.digest),
                    mediatypes.OCI_MANIFEST, (), rule=rule.described),))

    kept, errors = select(loaded, lock)
    assert (errors, [str(image.source.tag) for image in kept]) == ([], ["1.0.0"])
    assert proxy.count("GET", "/tags/list") == 0

    upgraded, errors = select(loaded, lock, upgraded=lambda asked: asked is rule)
    assert (errors, [str(image.source.tag) for image in upgraded]) == ([], ["1.0.0", "1.1.0"])
    assert proxy.count("GET", "/tags/list") == 1


def test_a_target_both_a_rule_and_an_entry_claim_is_refused_naming_both_lines(tmp_path):
    """Nothing would say which source the target holds: the rule's image is refused, the entry kept."""
    loaded = load(tmp_path,
                  '{source: "registry.example/app", tags: {semver: "^1"}}',
                  '"registry.example/app:1.0.0"')
    entry = loaded.desired[0]
    by_rule = loaded.tag_rules[0].image("1.0.0")
    unrelated = loaded.tag_rules[0].image("1.1.0")

    refused = _shared_targets(loaded, [by_rule, unrelated])

    assert refused == [Unselected(by_rule.source, entry.target,
                                  f"target {entry.target} is selected by the tag rule on line 3 and named by "
                                  "the entry on line 4; narrow the rule or remove one")]


def test_select_tags_keeps_the_entry_and_reports_the_rules_image_that_shares_its_target(tmp_path, push_image):
    pushed = push_tags(push_image, "1.0.0", "1.1.0")
    loaded = load(tmp_path, rule_entry(pushed, '{semver: "^1"}'), f'"{source(pushed, "1.0.0")}"')

    selected, errors = select(loaded)

    # Still selected: the error is what refuses it.
    assert [str(image.source.tag) for image in selected] == ["1.0.0", "1.1.0"]
    assert [(str(error.target), error.message.split(";")[0]) for error in errors] == [
        (str(loaded.desired[0].target), f"target {loaded.desired[0].target} is selected by the tag rule on line 3 "
                                        "and named by the entry on line 4")]


def test_two_rules_selecting_one_target_refuse_the_second(tmp_path):
    loaded = load(tmp_path,
                  '{source: "registry.example/app", target: "one", tags: {semver: "^1"}}',
                  '{source: "registry.example/other", target: "one", tags: {semver: "^1"}}')
    first, second = (rule.image("1.0.0") for rule in loaded.tag_rules)

    refused = _shared_targets(loaded, [first, second])

    assert [(image.source, image.target) for image in refused] == [(second.source, second.target)]
    assert _shared_targets(loaded, [first]) == []


# --- one listing per repository -------------------------------------------------------------


def test_a_repositorys_tags_are_listed_once_for_its_rule_and_all_its_images_referrers(
    tmp_path, push_image, fault_proxy, plain_registry
):
    pushed = push_tags(push_image, "1.0.0", "1.1.0", "old")
    proxy = fault_proxy(plain_registry)
    repository = f"{proxy.host}/{pushed.repo}"
    loaded = load(tmp_path, f'{{source: "{repository}", tags: {{semver: "^1"}}}}', f'"{repository}:old"')

    async def main():
        async with registries() as regs:
            listings = TagListings(regs)
            selected, unselected = await select_tags(regs, listings, loaded, EMPTY_LOCK, lambda rule: False)
            resolved, errors = await resolve_all(regs, listings, [*loaded.desired, *selected])
            return unselected, resolved, errors

    unselected, resolved, errors = run(main())

    assert (unselected, errors) == ([], {})
    assert len(resolved) == 3
    assert proxy.count("GET", "/tags/list") == 1


def test_each_repository_is_listed_on_its_own(tmp_path, push_image, fault_proxy, plain_registry):
    one, two = push_image("oci"), push_image("oci")
    proxy = fault_proxy(plain_registry)
    loaded = load(tmp_path, f'"{proxy.host}/{one.repo}:v1"', f'"{proxy.host}/{two.repo}:v1"')

    async def main():
        async with registries() as regs:
            return await resolve_all(regs, TagListings(regs), list(loaded.desired))

    resolved, errors = run(main())

    assert (len(resolved), errors) == (2, {})
    assert sorted(request.url_path for request in proxy.requests_matching("GET", "/tags/list")) == sorted(
        f"/v2/{pushed.repo}/tags/list" for pushed in (one, two))


def test_no_tags_are_listed_when_referrers_are_off_and_no_rule_asks(tmp_path, push_image, fault_proxy, plain_registry):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    loaded = load(tmp_path, f'"{proxy.host}/{pushed.repo}:v1"', top=f"{NO_REFERRERS}\n")

    async def main():
        async with registries() as regs:
            return await resolve_all(regs, TagListings(regs), list(loaded.desired))

    resolved, errors = run(main())

    assert (len(resolved), errors) == (1, {})
    assert proxy.count("GET", "/tags/list") == 0
