"""The original image-syncer's command line, rewritten into ours (plain values, no process)."""

from __future__ import annotations

import pytest

from reconciler import compat


@pytest.mark.parametrize(("args", "environ", "expected"), [
    # No subcommand but an images file: the original tool's run, which is sync.
    (["-i", "images.yaml"], {}, ["sync", "-i", "images.yaml"]),
    (["--images-file", "images.yaml", "-t", "key.json"], {}, ["sync", "--images-file", "images.yaml", "-t", "key.json"]),
    (["--images-file=images.yaml"], {}, ["sync", "--images-file=images.yaml"]),
    (["-i=images.yaml"], {}, ["sync", "-i=images.yaml"]),
    ([], {"SYNCER_IMAGES_FILE": "images.yaml"}, ["sync"]),
    # Ours are left alone: a subcommand anywhere, or nothing that names the original's run.
    ([], {}, []),
    (["--version"], {}, ["--version"]),
    (["plan", "-i", "images.yaml"], {}, ["plan", "-i", "images.yaml"]),
    (["-i", "images.yaml", "lock"], {}, ["-i", "images.yaml", "lock"]),
    (["apply", "-d", "false"], {}, ["apply", "-d", "false"]),
])
def test_no_subcommand_with_an_images_file_means_sync(args, environ, expected):
    assert compat.rewrite(args, environ) == expected


@pytest.mark.parametrize(("dry_run", "expected"), [
    (["--dry-run=false"], ["--dry-run=false"]),
    (["--dry-run", "false"], ["--dry-run=false"]),
    (["-d", "False"], ["--dry-run=False"]),
    (["-d", "0"], ["--dry-run=0"]),
    (["-d=false"], ["--dry-run=false"]),
    (["--dry-run"], ["--dry-run=true"]),
    (["-d"], ["--dry-run=true"]),
    (["-d", "-t", "key.json"], ["--dry-run=true", "-t", "key.json"]),
    (["--dry-run", "maybe"], ["--dry-run=true", "maybe"]),
])
def test_go_style_booleans_of_dry_run(dry_run, expected):
    assert compat.rewrite(["-i", "images.yaml", *dry_run], {}) == ["sync", "-i", "images.yaml", *expected]
    assert compat.rewrite(["sync", *dry_run], {}) == ["sync", *expected]


@pytest.mark.parametrize(("value", "expected"), [
    *[(word, True) for word in ("true", "T", "1", "yes", "Y", "on", " TRUE ")],
    *[(word, False) for word in ("false", "F", "0", "no", "N", "off", " False ")],
    *[(word, None) for word in ("", "maybe", "2", "truee")],
])
def test_parse_bool(value, expected):
    assert compat.parse_bool(value) is expected
