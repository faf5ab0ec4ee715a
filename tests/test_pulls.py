"""pulls.py and the pull limit: a run copies what Docker Hub's budget covers, in lock order, and defers the rest.

The source sits behind the fault proxy's pull limit mode: Docker Hub's ratelimit headers on
manifest answers, a pull spent per manifest GET, 429 TOOMANYREQUESTS once none is left. Hostile
numbers in those headers and in Retry-After (``¹²``, ``inf``, ``1e30``) are as if absent: they
cost the image they come with one line, never the run.
"""

from __future__ import annotations

import itertools

import pytest

from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images
from tests.test_shard import expected_shard

TOOMANYREQUESTS = (b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}')


@pytest.fixture
def three_locked(tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy):
    """Sources a (1 pull), b (an index of 2 platforms: 3 pulls) and c (1 pull), locked in that order."""
    base = unique_repo("pulls")
    pushed = {name: push_image(kind, repo=f"{base}/{name}") for name, kind in (("a", "oci"), ("b", "oci-index"),
                                                                              ("c", "docker"))}
    source = fault_proxy(plain_registry)
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, prefix, [{"source": f"{source.host}/{image.repo}:v1"} for image in pushed.values()])
    assert run_cli(tmp_path, "lock").code == 0
    source.clear()
    mirror = f"{prefix}{source.host.replace(':', '_')}/"
    return pushed, source, {name: f"{mirror}{image.repo}:v1" for name, image in pushed.items()}


def report_line(result, target: str) -> str:
    """The report's line for ``target``: symbol, target, outcome and message."""
    lines = [line.strip() for line in result.stdout.splitlines() if f" {target} " in line]
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_a_short_budget_copies_what_fits_in_lock_order_and_defers_the_rest(tmp_path, three_locked):
    pushed, source, targets = three_locked
    source.pull_limit(100, remaining=3)

    planned = run_cli(tmp_path, "plan")
    applied = run_cli(tmp_path, "apply")

    assert f"{source.host}: applying pulls up to 5 manifest(s); 3 of 100 pulls left: apply copies what fits" \
        in planned.stdout
    assert applied.code == 1, applied.stderr
    assert "3 of 100 pulls left, and this run may need up to 5" in applied.stderr  # said before copying
    assert report_line(applied, targets["b"]) == (
        f"> {targets['b']}  deferred: {source.host} pull limit (2 left, pulls age out over 6h)")
    assert "2 copied, 0 unchanged, 0 refused, 0 failed, 1 deferred" in applied.stdout
    assert source.pulls_refused == 0 and source.pulls_remaining == 1  # a and c: one pull each
    assert source.count("GET", f"/{pushed['b'].repo}/manifests/") == 0
    for name in ("a", "c"):
        assert skopeo_inspect_raw(targets[name]) == pushed[name].manifest

    source.pull_limit(100, remaining=100)  # pulls aged out: a rerun goes on from there
    again = run_cli(tmp_path, "apply")

    assert again.code == 0, again.stdout + again.stderr
    assert "1 copied, 2 unchanged" in again.stdout
    assert skopeo_inspect_raw(targets["b"]) == pushed["b"].manifest
    assert source.pulls_remaining == 100 - 3


def test_a_budget_that_covers_the_run_defers_nothing_and_says_nothing(tmp_path, three_locked):
    _, source, _ = three_locked
    source.pull_limit(100, remaining=5)

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 0, applied.stdout + applied.stderr
    assert "pulls left" not in applied.stderr
    assert source.pulls_remaining == 0 and source.pulls_refused == 0  # the index and its platforms: 3 of them


def test_a_spent_budget_is_not_waited_for_the_image_is_deferred_with_when_to_retry(tmp_path, three_locked):
    pushed, source, targets = three_locked
    source.fail("GET", r"/manifests/", 429, times=None, body=TOOMANYREQUESTS, headers={
        "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600", "Retry-After": "7200",
        "Content-Type": "application/json"})

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1
    for name in pushed:
        assert report_line(applied, targets[name]) == (
            f"> {targets[name]}  deferred: {source.host} pull limit (0 left, resets in 2h)")
        assert source.count("GET", f"/{pushed[name].repo}/manifests/") == 1  # no retry, no sleeping


@pytest.mark.parametrize(("retry_after", "spelt"), [
    ("5400", "1h30m"), ("180000", "2d02h"), ("9" * 18, "more than a year"),
    ("Fri, 31 Dec 9999 23:59:59 GMT", "more than a year"),
])
def test_a_retry_after_beyond_a_minute_fails_the_image_at_once_saying_when(tmp_path, three_locked, retry_after,
                                                                          spelt):
    pushed, source, targets = three_locked
    source.fail("GET", f"/{pushed['a'].repo}/blobs/", 503, times=None, headers={"Retry-After": retry_after})

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1
    failed = report_line(applied, targets["a"])
    assert failed.startswith(f"x {targets['a']}  failed: reading the source: ")
    assert failed.endswith(f"failed with HTTP 503: Service Unavailable (the registry asks to retry in {spelt}; "
                           "not waiting that long)")
    assert source.count("GET", f"/{pushed['a'].repo}/blobs/") == len(pushed["a"].blobs)  # each once
    assert "2 copied" in applied.stdout


@pytest.mark.parametrize("retry_after", ["inf", "1e30"])
def test_a_retry_after_that_is_no_number_is_absent_the_image_is_retried_then_fails_alone(tmp_path, three_locked,
                                                                                        retry_after):
    pushed, source, targets = three_locked
    source.fail("GET", f"/{pushed['a'].repo}/blobs/", 503, times=None, headers={"Retry-After": retry_after})

    applied = run_cli(tmp_path, "apply", "--retries", "1")

    assert applied.code == 1, str(applied)
    assert "Traceback" not in applied.stderr and "internal error" not in applied.stdout + applied.stderr
    failed = report_line(applied, targets["a"])
    assert failed.startswith(f"x {targets['a']}  failed: reading the source: ")
    assert failed.endswith("failed with HTTP 503: Service Unavailable")  # no wait to tell of
    assert "2 copied, 0 unchanged, 0 refused, 1 failed" in applied.stdout


def test_a_ratelimit_count_in_superscripts_is_no_budget_the_image_fails_alone(tmp_path, three_locked):
    """``¹²`` are digits to str.isdigit, not a count: the 429 is a plain one, retried, and no pull limit."""
    pushed, source, targets = three_locked
    source.fail(None, f"/{pushed['a'].repo}/manifests/", 429, times=None, body=TOOMANYREQUESTS, headers={
        "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "\u00b9\u00b2;w=21600",
        "Content-Type": "application/json"})

    planned = run_cli(tmp_path, "plan", "--retries", "1")
    applied = run_cli(tmp_path, "apply", "--retries", "1")

    for result in (planned, applied):
        assert result.code == 1, str(result)
        assert "Traceback" not in result.stderr and "internal error" not in result.stdout + result.stderr, str(result)
        assert "HTTP 429" in report_line(result, targets["a"])
    assert "pulls left" not in planned.stdout + applied.stderr
    assert report_line(applied, targets["a"]).startswith(f"x {targets['a']}  failed: ")
    assert "2 copied, 0 unchanged, 0 refused, 1 failed" in applied.stdout
    for name in ("b", "c"):
        assert skopeo_inspect_raw(targets[name]) == pushed[name].manifest


def test_shards_behind_one_address_each_plan_for_their_share_of_the_budget(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy,
):
    """--shard K/N admits at most remaining // N pulls: N shards that all read the same budget
    at the start (as an Indexed Job's pods do) never spend more than it had between them."""
    source = fault_proxy(plain_registry)
    base = unique_repo("pulls")
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    mirror = f"{prefix}{source.host.replace(':', '_')}/"
    # shard 1: a (1 pull), b (3), c (1), d (3): 8 pulls; shard 2: e (3), f (3): 6; 14 in all
    wanted = {"a": (1, "oci"), "b": (1, "oci-index"), "c": (1, "docker"), "d": (1, "oci-index"),
              "e": (2, "oci-index"), "f": (2, "oci-index")}
    names = {letter: next(f"{letter}{index}" for index in itertools.count()
                          if expected_shard(f"{mirror}{base}/{letter}{index}:v1", 2) == shard)
             for letter, (shard, _) in wanted.items()}
    pushed = {letter: push_image(kind, repo=f"{base}/{names[letter]}") for letter, (_, kind) in wanted.items()}
    write_images(tmp_path, prefix, [{"source": f"{source.host}/{pushed[letter].repo}:v1"} for letter in wanted])
    assert run_cli(tmp_path, "lock").code == 0
    source.clear()
    targets = {letter: f"{mirror}{image.repo}:v1" for letter, image in pushed.items()}

    spent = {}
    for shard, deferred, left, needs in (("1/2", "d", 0, 8), ("2/2", "f", 2, 6)):
        source.pull_limit(100, remaining=10)  # each shard starts from the budget the registry states
        applied = run_cli(tmp_path, "apply", "--shard", shard)
        spent[shard] = 10 - source.pulls_remaining

        assert applied.code == 1, str(applied)
        assert (f"10 of 100 pulls left (this shard's share: 5, 1/2 of them), and this run may need up to {needs}"
                in applied.stderr), str(applied)
        assert report_line(applied, targets[deferred]) == (
            f"> {targets[deferred]}  deferred: {source.host} pull limit ({left} left, pulls age out over 6h)")
        assert source.count("GET", f"/{pushed[deferred].repo}/manifests/") == 0
        assert source.pulls_refused == 0

    assert spent == {"1/2": 5, "2/2": 3}  # a, b and c; e: each within 10 // 2
    assert sum(spent.values()) <= 10  # while the whole lock's shards would need 14
    for letter in "abce":
        assert skopeo_inspect_raw(targets[letter]) == pushed[letter].manifest
