"""What a registry serves, checked whole with skopeo, never with the code under test.

skopeo pulls every manifest and blob of a tag (checking each digest on the way)
into its ``dir:`` layout; that layout is compared file by file with the one the
harness writes for the image it built.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .images import Image
from .skopeo import SkopeoError, registry_side, skopeo_copy, skopeo_inspect_raw


def _layout_files(directory: Path) -> dict[str, bytes]:
    """The manifests and blobs of a ``dir:`` layout; its version line says nothing about the image."""
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.name != "version"}


def assert_serves(registry, repo: str, tag: str, image: Image, workdir: str | Path | None = None) -> None:
    """``registry`` serves ``repo:tag`` as exactly ``image``: the same manifests and blobs, byte for byte."""
    scratch = Path(tempfile.mkdtemp(prefix="harness-pull-", dir=workdir))
    try:
        side = registry_side(registry)
        skopeo_copy(f"docker://{registry.host}/{repo}:{tag}", f"dir:{scratch / 'served'}",
                    src_tls_verify=side["tls_verify"], src_creds=side["creds"], src_cert_dir=side["cert_dir"])
        served = _layout_files(scratch / "served")
        built = _layout_files(image.write_dir_layout(scratch / "built"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    missing = sorted(built.keys() - served.keys())
    extra = sorted(served.keys() - built.keys())
    differing = sorted(name for name in built.keys() & served.keys() if built[name] != served[name])
    assert not (missing or extra or differing), (
        f"{registry.host}/{repo}:{tag} is not {image.digest}: missing {missing}, extra {extra}, differing {differing}"
    )


def has_tag(registry, repo: str, tag: str) -> bool:
    """Whether ``repo:tag`` resolves to a manifest at all."""
    side = registry_side(registry)
    try:
        skopeo_inspect_raw(f"docker://{registry.host}/{repo}:{tag}", **side)
    except SkopeoError as error:
        if "manifest unknown" in error.stderr:
            return False
        raise
    return True
