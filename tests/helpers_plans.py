"""Plans as planning makes them (``plan.decide`` over locked images), with real-world names, for the
markdown views' tests and the screenshot in docs/."""

from __future__ import annotations

import random

from reconciler import plan
from reconciler.lockfile import LockedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from reconciler.oci.referrer import FoundBy, Referrer
from reconciler.plan import Plan

PREFIX = "europe-west1-docker.pkg.dev/platform-prod/mirror/"
LOCK_DIGEST = "sha256:" + "0" * 64


def digest(seed: str) -> Digest:
    return Digest.of(seed.encode())


def locked(source: str, tag: str | None = None, platforms: tuple[str, ...] = (), referrers: int = 0,
           rule: str | None = None) -> LockedImage:
    """The entry images.yaml's ``source`` (and ``tag`` for a digest-only one) locks to under PREFIX."""
    parsed = reference.parse(source)
    name = str(parsed.repository).removeprefix("docker.io/").removeprefix("library/")
    pinned = digest(f"{source} {tag}")
    signatures = tuple(Referrer(pinned, digest(f"{source} signature {n}"), OCI_MANIFEST,
                                "application/vnd.dev.sigstore.bundle.v0.3+json", FoundBy.API) for n in range(referrers))
    return LockedImage(parsed, reference.parse(f"{PREFIX}{name}:{tag or parsed.tag}"), pinned,
                       OCI_INDEX if platforms else OCI_MANIFEST, platforms, signatures, rule=rule)


TWO = ("linux/amd64", "linux/arm64")
FIVE = ("linux/amd64", "linux/arm/v7", "linux/arm64", "linux/ppc64le", "linux/s390x")


def example_plan() -> Plan:
    """1 conflict, 2 creates (one of a moved source tag) and 5 unchanged: the issue's plan."""
    conflict = locked("bitnami/postgresql:16.2.0-debian-12-r8", platforms=TWO)
    return Plan(lock_digest=LOCK_DIGEST, images=(
        plan.decide(conflict, digest("someone else's push"), None),
        plan.decide(locked("quay.io/jetstack/cert-manager-controller:v1.15.1", platforms=FIVE, referrers=2), None,
                    True),
        plan.decide(locked("ghcr.io/external-secrets/external-secrets:v0.9.20", platforms=TWO), None, True,
                    moved_to=digest("moved upstream")),
        *(plan.decide(image, image.digest, None) for image in (
            locked("busybox:1.36.1", platforms=FIVE),
            locked("alpine@sha256:77726ef6b57ddf65bb551896826ec38bc3e53f75cdde31354fbffb4f25238ebd", "3.20.0"),
            locked("nginx:1.27.0", platforms=TWO),
            locked("registry.k8s.io/ingress-nginx/controller:v1.11.1", platforms=TWO),
            locked("golang:1.22.5-alpine", platforms=FIVE),
        )),
    ))


def large_plan(rng: random.Random, *, refused: int, creates: int, unchanged: int, note: str = "") -> Plan:
    """Names of random length (a realistic spread, seeded): ``refused`` as errors whose message ends in
    ``note``, then creates and unchanged."""

    def entry(kind: str, n: int) -> LockedImage:
        path = "/".join(f"{kind}{n}x" + "p" * rng.randrange(12) for _ in range(rng.randrange(1, 4)))
        return locked(f"quay.io/{path}:v{n}.{rng.randrange(100)}", platforms=TWO[: rng.randrange(3)],
                      referrers=rng.randrange(3))

    images = [plan.PlannedImage(entry("e", n), plan.Action.ERROR, message=f"HTTP 500 from quay.io {note}")
              for n in range(refused)]
    images += [plan.decide(entry("c", n), None, True) for n in range(creates)]
    images += [plan.decide(image, image.digest, None) for image in (entry("u", n) for n in range(unchanged))]
    rng.shuffle(images)
    return Plan(lock_digest=LOCK_DIGEST, images=tuple(images))
