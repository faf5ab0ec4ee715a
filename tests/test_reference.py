"""Image references (reconciler/oci/reference.py): docker's normalisation, and what it refuses."""

from __future__ import annotations

import pytest

from reconciler.oci import reference


@pytest.mark.parametrize(
    ("text", "expected", "api_host"),
    [
        ("busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("index.docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7", "registry-1.docker.io"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io"),
        ("localhost:5001/demo/app:1", "localhost:5001/demo/app:1", "localhost:5001"),
        ("quay.io/jetstack/cert-manager-controller:v1.15.1", "quay.io/jetstack/cert-manager-controller:v1.15.1", "quay.io"),
        ("localhost/app", "localhost/app:latest", "localhost"),
        ("a/b__c.d-e:T_1.0@sha256:" + "a" * 64, "docker.io/a/b__c.d-e:T_1.0@sha256:" + "a" * 64, "registry-1.docker.io"),
    ],
)
def test_reference_normalization(text, expected, api_host):
    parsed = reference.parse(text)
    assert str(parsed) == expected
    assert parsed.repository.api_host == api_host


@pytest.mark.parametrize(
    "text", ["", "Busybox", "a//b", "busybox:", "busybox:-x", "a@sha256:abc", "a@md5:" + "a" * 32, "-a/b", "a/b-",
             "busybox:é1", "busybox:1é", "bü/x:1", "busybox:" + "a" * 129]
)
def test_invalid_references_are_refused(text):
    with pytest.raises(reference.InvalidReference):
        reference.parse(text)
