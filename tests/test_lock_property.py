"""A property of `lock` (issue 21): whatever images.yaml says and whatever happened upstream,
a `lock` that succeeds writes a lock that `lock --check` passes and that a second `lock` leaves
byte-identical; a `lock` that refuses leaves images.lock byte-identical and says why in one line
per image. It is what makes the pull request's green `lock --check` mean the lock is images.yaml.

Checked with the real workflow.lock and workflow.lock_problems (what `lock --check` lists)
against docker-registry, over seeded random weeks: each step edits images.yaml (entries added and
removed; required platforms and `only` subsets; referrers rules; `verify` with one of two cosign
keys; tag rules with semver, regex, exclude, variant, latest), changes the sources (a tag moved to
another image, a new version tag, a signature or an SBOM appearing) and may ask for
`lock --upgrade` of all or of one name. The images and their signatures are built and pushed
once per module; each seed mounts them into source repositories of its own and has its own
target prefix, so seeds never see each other's tags. A failure names its seed and step:
`pytest tests/test_lock_property.py -k 'seed-7'`.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from reconciler import config, workflow
from tests.harness import cosign
from tests.harness.artifacts import push_artifact, push_referrers_index, subject_descriptor
from tests.harness.images import OCI_MANIFEST, Image, build_image, linux
from tests.harness.rawhttp import RawRegistry
from tests.helpers_clients import registries, run

SEEDS = 24
STEPS = 8

PLAIN_REPOSITORIES = ("plain",)
RULE_REPOSITORIES = ("rules-a", "rules-b")
TAGS = ("0.9.0", "1.0.0", "1.1.0", "1.2.0", "1.2.0-alpine", "2.0.0", "latest")
TAGS_APPEARING = ("1.3.0", "1.3.0-alpine", "2.1.0")
TAG_RULES = (
    {"semver": "^1"}, {"semver": ">=1.1"}, {"semver": "~1.0"}, {"semver": "^1", "variant": "alpine"},
    {"semver": ">=0.9", "latest": 2}, {"semver": "^3"}, {"regex": "^1\\."},
    {"regex": "^[0-9]", "exclude": ["alpine"]}, {"regex": "^[0-9]", "exclude": ["^1\\."], "latest": 1},
)
PLATFORMS = ("linux/amd64", "linux/arm64")
SPDX = "application/spdx+json"
KEYS = ("k1.pub", "k2.pub")


def pool_images() -> tuple[Image, ...]:
    """Every image a source tag may hold: single images of two architectures, and indexes of one
    or two platforms in both manifest types. One layer each: fewer blobs to mount per repository."""
    return (
        build_image("oci", seed="lock-property-1", layers=1),
        build_image("oci", seed="lock-property-2", layers=1, arch="arm64"),
        build_image("oci-index", seed="lock-property-3", layers=1),
        build_image("docker-list", seed="lock-property-4", layers=1),
        build_image("oci-index", seed="lock-property-5", layers=1, platforms=(linux("amd64"),)),
    )


@dataclass
class Upstream:
    """The source registry: the pool pushed once into ``pool_repo``, mounted into each seed's repositories."""

    raw: RawRegistry
    host: str
    base: str
    pool: tuple[Image, ...]
    signers: dict[str, object]
    """The private key behind each public key file's name."""
    signatures: dict[tuple[str, str], tuple[str, str, bytes]] = field(default_factory=dict)
    """(image digest, key) -> the digests of its cosign signature's config and payload, and the
    manifest's bytes: pushed once to the pool repository, mounted and put in a seed's repository."""

    @property
    def pool_repo(self) -> str:
        return f"{self.base}/pool"

    def push_pool(self) -> None:
        for image in self.pool:
            for manifest in image.manifests:
                for blob in manifest.blobs:
                    self.raw.push_blob(self.pool_repo, blob.data)
            for key in KEYS:
                signed = cosign.push_signatures(self.raw, self.pool_repo, image.digest,
                                                [cosign.signature_by(self.signers[key], image.digest)])
                manifest = self.raw.get_manifest(self.pool_repo, signed).content
                written = json.loads(manifest)
                self.signatures[(image.digest, key)] = (
                    written["config"]["digest"], written["layers"][0]["digest"], manifest)

    def mount(self, repo: str, digest: str) -> None:
        answer = self.raw.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={self.pool_repo}")
        assert answer.status_code == 201, answer.text

    def sources_for(self, seed: int, rng: random.Random) -> "Sources":
        """The seed's own repositories: every pool image by digest, each tag on one of them chosen by
        ``rng``, most images signed, one with an SBOM."""
        sources = Sources(self, f"{self.base}/seed-{seed}", rng)
        for name in (*PLAIN_REPOSITORIES, *RULE_REPOSITORIES):
            repo = sources.repo(name)
            for image in self.pool:  # every pool image by digest, so that any tag can move to it
                for manifest in image.manifests:
                    for blob in manifest.blobs:
                        self.mount(repo, blob.digest)
                    if image.is_index:
                        self.put(repo, manifest.digest, manifest.raw, manifest.media_type)
                self.put(repo, image.digest, image.raw, image.media_type)
            for tag in TAGS:
                sources.retag(name, tag)
            for image in self.pool:  # most by the key images.yaml mostly names, some by the other, some not
                signer = rng.choices((*KEYS, None), weights=(6, 2, 2))[0]
                if signer is not None:
                    sources.sign(name, image, signer)
            sources.attach_sbom()
        sources.log.clear()
        return sources

    def put(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        answer = self.raw.put_manifest(repo, reference, raw, media_type)
        assert answer.status_code == 201, answer.text


@dataclass
class Sources:
    """One seed's source repositories, and what was done to them."""

    upstream: Upstream
    base: str
    rng: random.Random
    tags: dict[tuple[str, str], int] = field(default_factory=dict)
    """Which pool image each (repository, tag) holds."""
    log: list[str] = field(default_factory=list)

    def repo(self, name: str) -> str:
        return f"{self.base}/{name}"

    def source(self, name: str, tag: str | None = None) -> str:
        return f"{self.upstream.host}/{self.repo(name)}" + (f":{tag}" if tag else "")

    def retag(self, name: str, tag: str) -> None:
        """The tag now holds a pool image chosen at random (perhaps the one it held)."""
        chosen = self.rng.randrange(len(self.upstream.pool))
        image = self.upstream.pool[chosen]
        self.upstream.put(self.repo(name), tag, image.raw, image.media_type)
        self.tags[(name, tag)] = chosen
        self.log.append(f"{name}:{tag} -> pool image {chosen}")

    def sign(self, name: str, image: Image, key: str) -> None:
        """A pool image signed (again) in one repository, by one of the two keys."""
        config, payload, manifest = self.upstream.signatures[(image.digest, key)]
        self.upstream.mount(self.repo(name), config)
        self.upstream.mount(self.repo(name), payload)
        self.upstream.put(self.repo(name), cosign.signature_tag(image.digest), manifest, OCI_MANIFEST)
        self.log.append(f"{name}@{image.digest[:19]} signed by {key}")

    def attach_sbom(self) -> None:
        """An SPDX SBOM referring to a pool image, listed in the spec's fallback index."""
        name, image = self.rng.choice(sorted({name for name, _ in self.tags})), self.rng.choice(self.upstream.pool)
        repo = self.repo(name)
        sbom = push_artifact(self.upstream.raw, repo, subject_descriptor(image.raw, image.media_type), SPDX,
                             json.dumps({"spdxVersion": "SPDX-2.3", "name": self.rng.random()}).encode())
        push_referrers_index(self.upstream.raw, repo, image.digest, [sbom])
        self.log.append(f"{name}@{image.digest[:19]} has an SBOM")

    def change(self) -> None:
        """What happens upstream in a week: a tag moved, a version released, a signature or an SBOM."""
        what = self.rng.random()
        if what < 0.45:
            self.retag(*self.rng.choice(sorted(self.tags)))
        elif what < 0.6:
            self.retag(self.rng.choice((*PLAIN_REPOSITORIES, *RULE_REPOSITORIES)), self.rng.choice(TAGS_APPEARING))
        elif what < 0.85:
            self.sign(self.rng.choice(sorted({name for name, _ in self.tags})), self.rng.choice(self.upstream.pool),
                      self.rng.choice(KEYS))
        else:
            self.attach_sbom()


@pytest.fixture(scope="module")
def upstream(plain_registry):
    with RawRegistry(plain_registry) as raw:
        prepared = Upstream(raw, plain_registry.host, f"t/lock-property-{uuid.uuid4().hex[:6]}", pool_images(),
                            {name: cosign.new_key() for name in KEYS})
        prepared.push_pool()
        yield prepared


# --- images.yaml as a person edits it ------------------------------------------------------


def random_options(rng: random.Random) -> dict:
    """An entry's platforms, referrers and verify, each often left out as people do."""
    options = {}
    if rng.random() < 0.2:
        options["platforms"] = rng.choice([["linux/amd64"], ["linux/arm64"], list(PLATFORMS)])
    elif rng.random() < 0.15:
        options["platforms"] = {"only": rng.choice([["linux/amd64"], ["linux/arm64"], list(PLATFORMS)])}
    if rng.random() < 0.3:
        options["referrers"] = rng.choice([False, True, {"artifactTypes": [SPDX]}])
    if rng.random() < 0.2:
        options["verify"] = {"cosignKey": rng.choices(KEYS, weights=(4, 1))[0]}
    return options


@dataclass
class ImagesYaml:
    """The file's entries and top-level options, edited one change at a time."""

    sources: Sources
    prefix: str
    rng: random.Random
    entries: list[dict] = field(default_factory=list)
    top: dict = field(default_factory=dict)

    def plain_entry(self) -> dict | None:
        taken = {entry["source"] for entry in self.entries}
        free = [self.sources.source(name, tag) for name in PLAIN_REPOSITORIES for tag in TAGS
                if self.sources.source(name, tag) not in taken]
        return {"source": self.rng.choice(free), **random_options(self.rng)} if free else None

    def rule_entry(self) -> dict | None:
        taken = {entry["source"] for entry in self.entries}
        free = [self.sources.source(name) for name in RULE_REPOSITORIES if self.sources.source(name) not in taken]
        if not free:
            return None
        return {"source": self.rng.choice(free), "tags": dict(self.rng.choice(TAG_RULES)), **random_options(self.rng)}

    def edit(self) -> str:
        """One edit; returns what it did."""
        what = self.rng.random()
        if what < 0.35 or not self.entries:
            added = self.plain_entry() if self.rng.random() < 0.55 else self.rule_entry()
            if added is not None:
                self.entries.insert(self.rng.randint(0, len(self.entries)), added)
                return f"added {added['source']}"
            return "nothing added"
        entry = self.rng.choice(self.entries)
        if what < 0.5:
            self.entries.remove(entry)
            return f"removed {entry['source']}"
        if what < 0.9:
            option = self.rng.choice(["platforms", "referrers", "verify", *(["tags"] if "tags" in entry else [])])
            entry.pop(option, None)
            if option == "tags":
                entry["tags"] = dict(self.rng.choice(TAG_RULES))
            else:
                entry.update({key: value for key, value in random_options(self.rng).items() if key == option})
            return f"changed {option} of {entry['source']}"
        option = self.rng.choice(["referrers", "verify"])
        if option in self.top:
            del self.top[option]
        else:
            self.top[option] = self.rng.choice([False, {"artifactTypes": [SPDX]}]) if option == "referrers" \
                else {"cosignKey": self.rng.choices(KEYS, weights=(4, 1))[0]}
        return f"top-level {option}: {self.top.get(option)}"

    def fix(self, refusal: tuple[str, ...]) -> str:
        """What a person does after a refusal: drop the options of one entry it names, or the entry."""
        if "verify" in self.top and any("cosign" in line for line in refusal) and self.rng.random() < 0.5:
            del self.top["verify"]
            return "removed the top-level verify"
        named = [entry for entry in self.entries if any(entry["source"] in line for line in refusal)]
        if not named:
            return "nothing fixed"
        entry = self.rng.choice(named)
        if self.rng.random() < 0.5:
            self.entries.remove(entry)
            return f"removed {entry['source']}"
        for option in ("platforms", "verify"):
            entry.pop(option, None)
        if "tags" not in entry:
            return f"dropped platforms and verify of {entry['source']}"
        entry["tags"] = dict(self.rng.choice(TAG_RULES))
        return f"dropped platforms and verify of {entry['source']}, tag rule now {entry['tags']}"

    def write(self, path: Path) -> str:
        written = {"targetRepoPrefix": self.prefix, **self.top, "images": self.entries}
        text = yaml.safe_dump(json.loads(json.dumps(written)), sort_keys=False)  # no YAML aliases
        path.write_text(text)
        return text


def upgrade_asked(rng: random.Random, images: config.Config) -> tuple[bool, tuple[str, ...]]:
    """`lock`, `lock --upgrade` or `lock --upgrade NAME` (a source or target as written)."""
    names = sorted({name for rule in images.tag_rules for name in rule.names}
                   | {name for image in images.desired for name in (image.source.as_written, str(image.target))})
    what = rng.random()
    if what < 0.15:
        return True, ()
    if what < 0.35 and names:
        return False, (rng.choice(names),)
    return False, ()


def lock(images: config.Config, path: Path, upgrade_all: bool = False, upgrade_names: tuple[str, ...] = ()):
    async def locked():
        async with registries() as regs:
            return await workflow.lock(regs, images, path, upgrade_all=upgrade_all, upgrade_names=upgrade_names)

    return run(locked())


def read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def check_refusal(result: workflow.LockResult, lock_path: Path, before: bytes | None, where: str) -> None:
    """A refused lock writes nothing and says why in one line per image."""
    assert read(lock_path) == before and not result.written, f"a refused lock changed images.lock; {where}"
    assert all(line and "\n" not in line for line in result.errors), f"a refusal line spans lines; {where}"
    named = [line.split(": ", 1)[0] for line in result.errors]
    assert len(named) == len(set(named)), f"two refusal lines for one image; {where}"


def check_locked(images: config.Config, lock_path: Path, where: str) -> None:
    """What a lock wrote passes `lock --check`, and a second lock leaves it byte-identical."""
    written = lock_path.read_bytes()
    where += f"images.lock after:\n{written.decode()}"
    assert workflow.lock_problems(images, lock_path) == [], \
        f"`lock --check` refuses what `lock` just wrote; {where}"
    again = lock(images, lock_path)
    assert not again.errors, f"a second lock refuses; {where}"
    assert read(lock_path) == written and not again.written and again.resolved == (), \
        f"a second lock changed images.lock ({again.resolved}); {where}\nsecond:\n{read(lock_path).decode()}"


@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda seed: f"seed-{seed}")
def test_lock_then_check_passes_and_lock_twice_changes_nothing(seed, tmp_path, upstream, unique_repo):
    rng = random.Random(seed)
    for name, signer in upstream.signers.items():
        cosign.write_public_key(signer, tmp_path / name)
    sources = upstream.sources_for(seed, rng)
    images_yaml = ImagesYaml(sources, f"{upstream.host}/{unique_repo('mirror')}/", rng)
    images_path, lock_path = tmp_path / "images.yaml", tmp_path / "images.lock"
    history: list[str] = []
    locked, refusal = 0, ()
    for step in range(STEPS):
        if refusal and rng.random() < 0.85:
            history.append(f"step {step}: " + images_yaml.fix(refusal))
        history += [f"step {step}: " + images_yaml.edit() for _ in range(rng.randint(1, 2))]
        if step:
            sources.change()
            history += [f"step {step}: upstream {line}" for line in sources.log]
            sources.log.clear()
        text = images_yaml.write(images_path)
        images = config.load(images_path)
        upgrade_all, upgrade_names = upgrade_asked(rng, images)
        asked = " ".join(["lock", *(["--upgrade"] if upgrade_all or upgrade_names else []), *upgrade_names])
        before = read(lock_path)

        result = lock(images, lock_path, upgrade_all, upgrade_names)

        where = (f"seed {seed}, step {step}, `{asked}`; history:\n  " + "\n  ".join(history)
                 + f"\nimages.yaml:\n{text}errors: {list(result.errors)}\n"
                 + f"images.lock before:\n{(before or b'(none)').decode()}\n")
        history.append(f"step {step}: `{asked}` " + (f"refused: {list(result.errors)}" if result.errors else "locked"))
        refusal = result.errors
        if result.errors:
            check_refusal(result, lock_path, before, where)
        else:
            locked += 1
            check_locked(images, lock_path, where)
    assert locked, f"seed {seed}: every lock refused, so the property was never tried; history:\n  " + \
        "\n  ".join(history)
