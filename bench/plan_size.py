#!/usr/bin/env python3
"""How big the markdown plan is at N images: everything to create, and everything unchanged.

    .venv/bin/python bench/plan_size.py [--n 100 --n 1000 --n 10000]

Plans are real Plan values (``plan.decide`` over locked images with Docker Hub-style names under
one target prefix, two platforms each, as planning makes them); no registry is asked. Prints a
markdown table: the pull request comment (what ``plan --format markdown`` prints) and the job
summary, in characters and UTF-8 bytes, against GitHub's limits (65,536 characters for a comment,
1 MiB for a step summary), and how many images each lists by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import markdown, plan  # noqa: E402
from reconciler.lockfile import LockedImage  # noqa: E402
from reconciler.oci import reference  # noqa: E402
from reconciler.oci.digest import Digest  # noqa: E402
from reconciler.oci.mediatypes import OCI_INDEX  # noqa: E402

TARGET_PREFIX = "europe-west1-docker.pkg.dev/platform-prod/mirror/"
COMMENT_LIMIT = 65_536
SUMMARY_LIMIT = 1 << 20


def entry(n: int) -> LockedImage:
    """The n-th of N images: a team's repository on Docker Hub, one tag, two platforms."""
    source = f"team-{n % 37}/service-{n}:1.{n % 20}.{n % 7}"
    return LockedImage(reference.parse(source), reference.parse(TARGET_PREFIX + source),
                       Digest.of(source.encode()), OCI_INDEX, ("linux/amd64", "linux/arm64"))


def planned(count: int, create: bool) -> plan.Plan:
    images = [entry(n) for n in range(count)]
    return plan.Plan(lock_digest="sha256:" + "0" * 64, images=tuple(
        plan.decide(image, None if create else image.digest, True) for image in images))


def listed(text: str) -> int:
    return sum(line.startswith("- `") for line in text.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="images (default 100, 1000 and 10000)")
    counts = parser.parse_args().n or [100, 1000, 10_000]
    print("| N | plan | comment: characters | bytes | < 65,536 | listed | job summary: bytes | < 1 MiB | listed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count in counts:
        for create in (True, False):
            document = markdown.plan_markdown(planned(count, create))
            comment = document.fit(markdown.Room(markdown.COMMENT_BYTES, "[this run's job summary](https://x/y)"))
            summary = document.fit(markdown.Room(markdown.SUMMARY_BYTES))
            print(f"| {count:,} | all {'to create' if create else 'unchanged'} | {len(comment):,} | "
                  f"{len(comment.encode()):,} | {'yes' if len(comment) < COMMENT_LIMIT else 'NO'} | "
                  f"{listed(comment):,} | {len(summary.encode()):,} | "
                  f"{'yes' if len(summary.encode()) < SUMMARY_LIMIT else 'NO'} | {listed(summary):,} |")


if __name__ == "__main__":
    main()
