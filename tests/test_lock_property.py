"""A property of `lock` (issue 21), over seeded random images.yaml edits in plain values:
`lock` followed by `lock --check` always passes, and `lock` twice changes nothing.

The registry is a small world of plain values (each tag's digest, kind and signature), the
resolver a function over it that keeps resolve.py's contract (a single image's platform
recorded when its entry requires platforms); `lock` below is workflow.lock's steps over the
real config, lockfile and tagrules. Between edits, tags move upstream and upgrades are asked
for. A failure names its seed: `pytest tests/test_lock_property.py -k 'seed-17'`.
"""

from __future__ import annotations

import json
import random

import attrs
import pytest
import yaml

from reconciler import config, lockfile, tagrules
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.registry.digest import Digest
from reconciler.registry.mediatypes import OCI_INDEX, OCI_MANIFEST
from reconciler.registry.platforms import PlatformSubset
from reconciler.registry.platforms import missing as platforms_missing
from reconciler.registry.referrers import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer
from tests.harness import cosign as cosign_keys

REPOSITORIES = ("src/a", "src/b", "src/c", "src/d")
TAGS = ("0.9.0", "1.0.0", "1.1.0", "1.2.0", "1.2.0-alpine", "2.0.0", "latest")
RULES = ({"semver": "^1"}, {"semver": ">=1.1"}, {"semver": "~1.0"}, {"regex": "^1\\."},
         {"semver": "^1", "variant": "alpine"}, {"semver": ">=0.9", "latest": 2}, {"regex": ".", "exclude": ["^l"]})
PLATFORMS = ("linux/amd64", "linux/arm64")
SPDX = "application/spdx+json"
SEEDS = 120
STEPS = 8


class Refused(Exception):
    """What resolve or select_tags would report: lock writes nothing."""


@attrs.define
class World:
    """Every source tag's content, changed by ``move``: a version number per tag."""

    rng: random.Random
    keys: dict[str, str]
    """The key files' digests by file name."""
    versions: dict[tuple[str, str], int] = attrs.field(factory=dict)

    def digest(self, repository: str, tag: str) -> Digest:
        return Digest.of(f"{repository}:{tag}:{self.versions.get((repository, tag), 0)}".encode())

    def move(self) -> None:
        self.versions[(self.rng.choice(REPOSITORIES), self.rng.choice(TAGS))] = self.rng.randrange(1000)

    def resolve(self, desired: config.DesiredImage) -> LockedImage:
        repository, tag = desired.source.repository.path, str(desired.source.tag)
        digest = self.digest(repository, tag)
        is_index = int(str(digest)[-1], 16) % 2 == 0
        platforms = PLATFORMS if is_index else ("linux/amd64",)
        missing = platforms_missing(desired.platforms + desired.only_platforms, platforms)
        if missing or (desired.only_platforms and not is_index):
            raise Refused(f"{desired.source.as_written} lacks {missing}")
        signed_by = "k1.pub" if int(str(digest)[-2], 16) % 3 else "k2.pub"
        if desired.signature is not None and self.keys[signed_by] != desired.signature.key_digest:
            raise Refused(f"{desired.source.as_written} is signed by {signed_by}")
        referrers = ()
        if desired.referrers.copied and desired.referrers.artifact_types is None:
            signature = COSIGN_ARTIFACT_TYPES[FoundBy.COSIGN_SIGNATURE]
            referrers = (Referrer(digest, Digest.of(str(digest).encode()), OCI_MANIFEST, signature,
                                  FoundBy.COSIGN_SIGNATURE),)
        subset = PlatformSubset(desired.only_platforms, Digest.of(b"subset " + str(digest).encode())) \
            if desired.only_platforms else None
        # Fields resolve.py fills; merge adds what the pin was made under.
        return LockedImage(desired.source, desired.target, digest, OCI_INDEX if is_index else OCI_MANIFEST,
                           platforms if is_index or desired.platforms else (), referrers, subset=subset,
                           rule=desired.rule)

    def select(self, rule: config.DesiredTags, lock: Lockfile, upgraded: bool) -> list[config.DesiredImage]:
        """resolve.select_tags for one rule: as the lock pinned it, else listed."""
        pinned = lockfile.selected_by(rule, lock)
        if pinned and not upgraded:
            return list(pinned)
        chosen = tagrules.select(rule.rule, TAGS)
        if not chosen:
            raise Refused(f"{rule.described} selects nothing")
        return [rule.image(tag) for tag in chosen]


def lock(world: World, images: config.Config, text: str | None, upgrade: set[str]) -> str:
    """workflow.lock without the network: the text it would write."""
    existing = lockfile.load(images.path.parent / "images.lock") if text is not None else Lockfile(
        inputs_hash="", images=())
    selected = sorted((image for rule in images.tag_rules
                       for image in world.select(rule, existing, lockfile.upgrades(rule, False, upgrade))),
                      key=lambda image: str(image.target))
    work = lockfile.pending(images, existing, selected, upgrade_names=upgrade)
    resolved = {image.target: world.resolve(image) for image in work.to_resolve}
    return lockfile.dumps_readable(lockfile.merge(images, work.kept, resolved, selected),
                                   images.path.parent / "images.lock")


def random_images(rng: random.Random) -> dict:
    """images.yaml as a person might have it this week: plain entries on two repositories, rules on two others."""
    entries = []
    for repository in rng.sample(REPOSITORIES[:2], rng.randint(0, 2)):
        for tag in rng.sample(TAGS, rng.randint(1, 2)):
            entries.append({"source": f"registry.test/{repository}:{tag}", **random_options(rng)})
    for repository in rng.sample(REPOSITORIES[2:], rng.randint(0, 2)):
        entries.append({"source": f"registry.test/{repository}", "tags": rng.choice(RULES), **random_options(rng)})
    rng.shuffle(entries)
    top = {"referrers": False} if rng.random() < 0.1 else {}
    written = {"targetRepoPrefix": rng.choice(["mirror.test/a/", "mirror.test/b/"]), **top, "images": entries}
    return json.loads(json.dumps(written))  # no value shared, so no YAML alias


def random_options(rng: random.Random) -> dict:
    options = {}
    if rng.random() < 0.3:
        options["platforms"] = rng.sample(PLATFORMS, rng.randint(1, 2))
    elif rng.random() < 0.15:
        options["platforms"] = {"only": [rng.choice(PLATFORMS)]}
    if rng.random() < 0.3:
        options["referrers"] = rng.choice([False, True, {"artifactTypes": [SPDX]}])
    if rng.random() < 0.15:
        options["verify"] = {"cosignKey": rng.choice(["k1.pub", "k2.pub"])}
    return options


@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda seed: f"seed-{seed}")
def test_lock_then_check_passes_and_lock_twice_changes_nothing(seed, tmp_path):
    rng = random.Random(seed)
    keys = {}
    for name in ("k1.pub", "k2.pub"):
        cosign_keys.write_public_key(cosign_keys.new_key(), tmp_path / name)
        keys[name] = str(Digest.of((tmp_path / name).read_bytes()))
    world, text, written = World(rng, keys), None, 0
    for step in range(STEPS):
        (tmp_path / "images.yaml").write_text(yaml.safe_dump(random_images(rng), sort_keys=False))
        images = config.load(tmp_path / "images.yaml")
        upgrade = set(rng.sample(sorted({name for rule in images.tag_rules for name in rule.names}),
                                 k=min(1, len(images.tag_rules)))) if rng.random() < 0.3 else set()
        where = f"seed {seed}, step {step}, upgrade {sorted(upgrade)}, images.yaml:\n" \
                f"{(tmp_path / 'images.yaml').read_text()}"
        try:
            text = lock(world, images, text, upgrade)
        except Refused:
            continue  # lock writes nothing: the old lock stays, as does its verdict
        (tmp_path / "images.lock").write_text(text)
        written += 1

        assert lockfile.differences(images, lockfile.load(tmp_path / "images.lock")) == [], where
        assert lock(world, images, text, set()) == text, where
        world.move()
    assert written, f"seed {seed}: every lock refused; the property was never tried"
