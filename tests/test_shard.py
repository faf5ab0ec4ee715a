"""--shard K/N on plan, apply and verify: the real CLI against real registries; and which
images go together, as a table over plain values.

Which shard a target falls in is computed here from the documented rule (README: images
that write a common tag form a group; the first 8 bytes of sha256 of the group's least
target string, big-endian, mod N, plus 1), so the test picks target names that fill every
shard, and checks the CLI against that rule rather than itself.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
from pathlib import Path

import pytest

from reconciler.lockfile import Lockfile, RemovedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.referrer import FoundBy
from reconciler.shard import Shard, group_keys, lock_part
from tests.harness import cosign
from tests.harness import images as harness_images
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import CliResult, run_cli, write_images
from tests.test_tagwriters import CHILD, IMAGE, INDEX, SBOM, SIG_1, SIG_2, pin, referrer


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def expected_shard(target: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:8], "big") % count + 1


def names_by_shard(prefix: str, count: int, per_shard: int, tag: str = "v1") -> dict[int, list[str]]:
    """Target repository names under ``prefix``, ``per_shard`` of them in each of ``count`` shards."""
    names: dict[int, list[str]] = {number: [] for number in range(1, count + 1)}
    for index in itertools.count():
        name = f"app-{index}"
        shard = names[expected_shard(f"{prefix}{name}:{tag}", count)]
        if len(shard) < per_shard:
            shard.append(name)
        if all(len(shard) == per_shard for shard in names.values()):
            return names


def planned_targets(workdir: Path, shard: str) -> set[str]:
    document = json.loads(ok(run_cli(workdir, "plan", "--shard", shard, "--format", "json")).stdout)
    assert document["shard"] == shard
    return {image["target"] for image in document["images"]}


def lock_entries(workdir: Path, prefix: str, source: str, names: dict[int, list[str]]) -> list[dict]:
    """images.yaml with ``source`` copied to each of ``names``, locked; its entries."""
    entries = [{"source": source, "target": name} for shard in names.values() for name in shard]
    write_images(workdir, prefix, entries)
    ok(run_cli(workdir, "lock"))
    return entries


def tags(registry, prefix: str, name: str) -> list[str]:
    """The tags the target repository ``name`` under ``prefix`` holds, asked of the registry itself."""
    with RawRegistry(registry) as raw:
        return raw.tags(prefix.split("/", 1)[1] + name)


@pytest.fixture
def prefix(second_plain_registry, unique_repo) -> str:
    return f"{second_plain_registry.host}/{unique_repo('mirror')}/"


def test_shards_partition_the_images_and_keep_them_when_another_is_added(tmp_path, push_image, prefix):
    pushed = push_image("oci")
    source = f"{pushed.host}/{pushed.repo}:v1"
    names = names_by_shard(prefix, 3, 2)
    entries = lock_entries(tmp_path, prefix, source, names)

    before = {number: planned_targets(tmp_path, f"{number}/3") for number in (1, 2, 3)}
    assert before == {number: {f"{prefix}{name}:v1" for name in names[number]} for number in (1, 2, 3)}

    write_images(tmp_path, prefix, [*entries, {"source": source, "target": "app-added"}])
    ok(run_cli(tmp_path, "lock"))
    after = {number: planned_targets(tmp_path, f"{number}/3") for number in (1, 2, 3)}
    added = f"{prefix}app-added:v1"
    assert [number for number in after if added in after[number]] == [expected_shard(added, 3)]
    assert {number: targets - {added} for number, targets in after.items()} == before


def test_shard_membership_is_exact_and_roughly_even_over_many_targets():
    targets = [f"registry.example/mirror/image-{index}:v{index % 7}" for index in range(3000)]
    for count in range(1, 9):
        shards = [Shard(number, count) for number in range(1, count + 1)]
        owners = [[shard.number for shard in shards if shard.holds(target)] for target in targets]
        assert owners == [[expected_shard(target, count)] for target in targets]
        sizes = collections.Counter(owner for owner, in owners)
        assert min(sizes.values()) > 0.8 * len(targets) / count, sizes


def test_candidates_for_deletion_are_split_by_their_own_target():
    removed = tuple(RemovedImage(reference.parse(f"registry.example/mirror/old-{index}:v1"), Digest.of(b"old"))
                    for index in range(300))
    lock = Lockfile(inputs_hash="sha256:" + "0" * 64, images=(), removed=removed)
    for count in (1, 3):
        parts = [lock_part(Shard(number, count), lock).removed for number in range(1, count + 1)]
        assert [[candidate.target for candidate in part] for part in parts] == [
            [candidate.target for candidate in removed if expected_shard(str(candidate.target), count) == number]
            for number in range(1, count + 1)]
        assert all(parts)


SIGNED, RESIGNED = referrer(FoundBy.COSIGN_SIGNATURE, SIG_1), referrer(FoundBy.COSIGN_SIGNATURE, SIG_2)
V1, STABLE, OTHER = "mirror.test/app:v1", "mirror.test/app:stable", "mirror.test/other:v1"
ALL, CHILD_TAG = "mirror.test/app:all", "mirror.test/app:child"
WHOLE_INDEX = pin(ALL, SIGNED, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2, subject=CHILD), digest=INDEX,
                  platforms=("linux/amd64", "linux/arm64"))


@pytest.mark.parametrize(("images", "keys"), [
    pytest.param([pin(V1, SIGNED)], [V1], id="an image alone is keyed by its own target"),
    pytest.param([pin(STABLE), pin(V1)], [STABLE, V1], id="one digest under two tags, nothing referring to it"),
    pytest.param([pin(STABLE, SIGNED), pin(V1, SIGNED)], [STABLE, STABLE], id="two tags writing one .sig tag"),
    pytest.param([pin(STABLE, SIGNED), pin(V1, RESIGNED)], [STABLE, STABLE],
                 id="two signatures for one .sig tag (lock refuses it; still one group)"),
    pytest.param([pin(OTHER, SIGNED), pin(V1, SIGNED)], [OTHER, V1], id="one signature in two repositories"),
    pytest.param([pin(STABLE, referrer(FoundBy.INDEX_TAG, SBOM)), pin(V1, referrer(FoundBy.API, SIG_2))],
                 [STABLE, STABLE], id="two tags listing into one fallback index"),
    pytest.param([pin(STABLE, SIGNED), pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2, subject=CHILD),
                                           digest=CHILD)], [STABLE, V1], id="signatures of two digests"),
    pytest.param([pin(V1, SIGNED), pin(CHILD_TAG, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2, subject=CHILD),
                                       digest=CHILD), WHOLE_INDEX],
                 [ALL, ALL, ALL], id="two images joined through an index whose children they are"),
    pytest.param([pin(f"mirror.test/app:sha256-{IMAGE.hex}.sig", digest=SIG_1), pin(V1, SIGNED)],
                 [f"mirror.test/app:sha256-{IMAGE.hex}.sig"] * 2, id="a target tag another pin's referrer writes"),
])
def test_images_that_write_a_common_tag_share_the_shard_of_their_least_target(images, keys):
    assert group_keys(images) == keys
    assert group_keys(images[::-1]) == keys[::-1]
    for count in (2, 3, 5):
        owners = [[number for number in range(1, count + 1) if Shard(number, count).holds(key)] for key in keys]
        assert owners == [[expected_shard(key, count)] for key in keys]


def test_groups_keep_their_key_when_unrelated_images_are_added():
    images = [pin(f"mirror.test/app-{index // 2}:{'stable' if index % 2 else 'v1'}",
                  referrer(FoundBy.COSIGN_SIGNATURE, SIG_1)) for index in range(40)]
    before = group_keys(images)
    added = [pin(f"mirror.test/added-{index}:v1", referrer(FoundBy.COSIGN_SIGNATURE, SIG_2)) for index in range(5)]

    after = group_keys([*added[:2], *images, *added[2:]])

    assert after[2:-3] == before == [f"mirror.test/app-{index // 2}:stable" for index in range(40)]
    assert after[:2] + after[-3:] == [str(image.target) for image in added]


def test_apply_and_verify_with_a_shard_touch_only_its_images(tmp_path, push_image, prefix, second_plain_registry):
    pushed = push_image("oci")
    names = names_by_shard(prefix, 2, 2)
    lock_entries(tmp_path, prefix, f"{pushed.host}/{pushed.repo}:v1", names)

    applied = ok(run_cli(tmp_path, "apply", "--shard", "1/2"))
    assert applied.stdout_lines[-1].startswith("Apply: 2 copied, 0 unchanged, 0 refused, 0 failed"), str(applied)
    assert {name: tags(second_plain_registry, prefix, name) for shard in names.values() for name in shard} == {
        **{name: ["v1"] for name in names[1]}, **{name: [] for name in names[2]},
    }
    ok(run_cli(tmp_path, "verify", "--shard", "1/2"))
    missing = ok(run_cli(tmp_path, "verify", "--shard", "2/2"), 1)
    assert missing.stdout_lines[-1] == "Verify: 0 intact, 0 changed, 2 deleted, 0 errors.", str(missing)

    ok(run_cli(tmp_path, "apply", "--shard", "2/2"))
    everything = ok(run_cli(tmp_path, "verify"))
    assert everything.stdout_lines == ["Verify: 4 intact, 0 changed, 0 deleted, 0 errors."]


def test_two_images_writing_one_signature_tag_are_applied_by_one_shard_and_the_other_touches_neither(
    tmp_path, push_image, unique_repo, prefix, plain_registry, second_plain_registry
):
    signed, unsigned = push_image("oci", repo=unique_repo("signed")), push_image("docker", repo=unique_repo("plain"))
    with RawRegistry(plain_registry) as raw:
        signature = cosign.push_signatures(raw, signed.repo, signed.digest,
                                           [cosign.signature_by(cosign.new_key(), signed.digest)])
    # A repository whose two tags a hash of each target alone would put in different shards.
    name = next(name for name in (f"app-{index}" for index in itertools.count())
                if expected_shard(f"{prefix}{name}:stable", 2) != expected_shard(f"{prefix}{name}:v1", 2))
    ours = expected_shard(f"{prefix}{name}:stable", 2)
    other = next(other for other in (f"other-{index}" for index in itertools.count())
                 if expected_shard(f"{prefix}{other}:v1", 2) != ours)
    source = f"{signed.host}/{signed.repo}:v1"
    write_images(tmp_path, prefix, [{"source": source, "target": name}, {"source": source, "target": f"{name}:stable"},
                                    {"source": f"{unsigned.host}/{unsigned.repo}:v1", "target": other}])
    ok(run_cli(tmp_path, "lock"))

    theirs = ok(run_cli(tmp_path, "apply", "--shard", f"{3 - ours}/2"))
    assert theirs.stdout_lines[-1].startswith("Apply: 1 copied, 0 unchanged, 0 refused, 0 failed"), str(theirs)
    assert tags(second_plain_registry, prefix, name) == []
    applied = ok(run_cli(tmp_path, "apply", "--shard", f"{ours}/2"))
    assert applied.stdout_lines[-1].startswith("Apply: 2 copied, 0 unchanged, 0 refused, 0 failed"), str(applied)
    assert sorted(tags(second_plain_registry, prefix, name)) == sorted(
        [cosign.signature_tag(signed.digest), "stable", "v1"])
    with RawRegistry(second_plain_registry) as raw:
        held = raw.head_manifest(f"{prefix.split('/', 1)[1]}{name}", cosign.signature_tag(signed.digest))
    assert held.headers["Docker-Content-Digest"] == signature
    ok(run_cli(tmp_path, "verify", "--shard", f"{ours}/2"))


def test_a_saved_plan_applies_only_with_the_shard_it_was_made_with(tmp_path, push_image, prefix, second_plain_registry):
    pushed = push_image("oci")
    names = names_by_shard(prefix, 2, 1)
    lock_entries(tmp_path, prefix, f"{pushed.host}/{pushed.repo}:v1", names)
    ok(run_cli(tmp_path, "plan", "--shard", "1/2", "--out", "first.json"))
    ok(run_cli(tmp_path, "plan", "--out", "all.json"))

    for args in (("first.json",), ("--shard", "2/2", "first.json")):
        refused = ok(run_cli(tmp_path, "apply", *args), 1)
        assert refused.error_lines == ["error: saved plan was made with --shard 1/2: apply it with --shard 1/2"]
    refused = ok(run_cli(tmp_path, "apply", "--shard", "1/2", "all.json"), 1)
    assert refused.error_lines == ["error: saved plan was made without --shard: apply it without --shard"]
    assert [tags(second_plain_registry, prefix, shard[0]) for shard in names.values()] == [[], []]

    damaged = tmp_path / "damaged.json"
    damaged.write_text((tmp_path / "first.json").read_text().replace('"shard": "1/2"', '"shard": "3/2"'))
    refused = ok(run_cli(tmp_path, "apply", "--shard", "1/2", "damaged.json"), 1)
    assert refused.error_lines == ["error: damaged.json:4: shard: '3/2': K must be 1 to N, and N at least 1"]

    applied = ok(run_cli(tmp_path, "apply", "--shard", "1/2", "first.json"))
    assert applied.stdout_lines[-1].startswith("Apply: 1 copied, 0 unchanged, 0 refused, 0 failed"), str(applied)
    assert [tags(second_plain_registry, prefix, shard[0]) for shard in names.values()] == [["v1"], []]


def test_a_saved_shard_plan_is_stale_when_its_own_pins_change_not_another_shards(
    tmp_path, push_image, unique_repo, prefix, second_plain_registry
):
    ours, theirs = push_image("oci", repo=unique_repo("ours")), push_image("docker", repo=unique_repo("theirs"))
    names = names_by_shard(prefix, 2, 1)
    our_source, their_source = (f"{pushed.host}/{pushed.repo}:v1" for pushed in (ours, theirs))
    write_images(tmp_path, prefix, [{"source": our_source, "target": names[1][0]},
                                    {"source": their_source, "target": names[2][0]}])
    ok(run_cli(tmp_path, "lock"))

    ok(run_cli(tmp_path, "plan", "--shard", "1/2", "--out", "plan.json"))
    push_image(harness_images.build_image("docker", seed="theirs-moved"), repo=theirs.repo, tag="v1")
    repinned = ok(run_cli(tmp_path, "lock", "--upgrade", their_source))
    assert repinned.stderr_lines[0] == f"  pinned {prefix}{names[2][0]}:v1", str(repinned)
    applied = ok(run_cli(tmp_path, "apply", "--shard", "1/2", "plan.json"))
    assert applied.stdout_lines[-1].startswith("Apply: 1 copied"), str(applied)

    ok(run_cli(tmp_path, "plan", "--shard", "2/2", "--out", "plan.json"))
    push_image(harness_images.build_image("docker", seed="theirs-moved-again"), repo=theirs.repo, tag="v1")
    ok(run_cli(tmp_path, "lock", "--upgrade", their_source))
    stale = ok(run_cli(tmp_path, "apply", "--shard", "2/2", "plan.json"), 1)
    assert stale.error_lines == [
        "error: saved plan is stale: the lock file changed since it was made; run `image-syncer plan` again"
    ], str(stale)
    assert tags(second_plain_registry, prefix, names[2][0]) == []


@pytest.mark.parametrize("command", ["plan", "apply", "verify"])
@pytest.mark.parametrize("value", ["0/4", "5/4", "1/0", "x", "1/", "-1/4", ""])
def test_a_bad_shard_is_a_usage_error(tmp_path, command, value):
    result = run_cli(tmp_path, command, "--shard", value)
    assert result.code == 2, str(result)
    assert result.stdout == ""
    assert len(result.stderr_lines) == 2, str(result)
    assert result.stderr_lines[0].startswith("error: Invalid value for '--shard': "), str(result)
    assert result.stderr_lines[1] == f"Try 'image-syncer {command} -h' for help."


def test_auto_takes_k_from_the_indexed_jobs_completion_index(tmp_path, push_image, prefix, monkeypatch):
    """A Kubernetes Indexed Job numbers its pods 0 to N-1 in JOB_COMPLETION_INDEX; shards count from 1."""
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    pushed = push_image("oci")
    names = names_by_shard(prefix, 3, 1)
    lock_entries(tmp_path, prefix, f"{pushed.host}/{pushed.repo}:v1", names)

    for index in range(3):
        result = ok(run_cli(tmp_path, "plan", "--shard", "auto/3", "--format", "json",
                            env={"JOB_COMPLETION_INDEX": str(index)}))
        document = json.loads(result.stdout)
        assert document["shard"] == f"{index + 1}/3"
        assert [image["target"] for image in document["images"]] == [f"{prefix}{names[index + 1][0]}:v1"]


@pytest.mark.parametrize("command", ["plan", "apply", "verify", "export"])
def test_auto_without_the_completion_index_is_a_usage_error_naming_it(tmp_path, command, monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    arguments = [command, "--shard", "auto/3", *(["out"] if command == "export" else [])]
    result = run_cli(tmp_path, *arguments)
    assert result.code == 2, str(result)
    assert result.stdout == ""
    assert result.stderr_lines == [
        "error: Invalid value for '--shard': 'auto/3': auto takes K from JOB_COMPLETION_INDEX "
        "(set by a Kubernetes Indexed Job), which is not set",
        f"Try 'image-syncer {command} -h' for help.",
    ], str(result)


@pytest.mark.parametrize("index", ["3", "-1", "x", "", " 1", "1.0", "\u0661", "9" * 30])
def test_auto_with_a_completion_index_outside_0_to_n_minus_1_is_a_usage_error_naming_it(tmp_path, index):
    result = run_cli(tmp_path, "plan", "--shard", "auto/3", env={"JOB_COMPLETION_INDEX": index})
    assert result.code == 2, str(result)
    assert len(result.stderr_lines) == 2, str(result)
    assert result.stderr_lines[0] == (f"error: Invalid value for '--shard': 'auto/3': JOB_COMPLETION_INDEX is "
                                      f"{index!r}, not a number from 0 to 2"), str(result)


@pytest.mark.parametrize(("text", "environ", "shard"), [
    ("auto/1", {"JOB_COMPLETION_INDEX": "0"}, Shard(1, 1)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(4, 4)),
    (" auto/4 ", {"JOB_COMPLETION_INDEX": "00"}, Shard(1, 4)),
    ("2/4", {}, Shard(2, 4)),  # K/N needs no variable, and ignores one
    ("2/4", {"JOB_COMPLETION_INDEX": "0"}, Shard(2, 4)),
])
def test_a_shard_argument_is_k_of_n_or_auto_of_n(text, environ, shard):
    assert Shard.from_argument(text, environ) == shard


@pytest.mark.parametrize("text", ["auto/0", "auto/", "auto", "Auto/2", "auto/x"])
def test_auto_needs_a_count_of_at_least_one(text):
    with pytest.raises(ValueError):
        Shard.from_argument(text, {"JOB_COMPLETION_INDEX": "0"})
