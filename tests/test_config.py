import textwrap
from pathlib import Path

import pytest

from reconciler import config
from reconciler.errors import InputError
from reconciler.oci.reference import Reference, Repository

ORIGINAL = """\
targetRepoPrefix: "eu.gcr.io/kyma-project/external/"
images:
- source: "bitnami/keycloak-gatekeeper:9.0.3"
- source: "busybox:1.31.1"
- source: "alpine@sha256:77726ef6b57ddf65bb551896826ec38bc3e53f75cdde31354fbffb4f25238ebd"
  tag: "3.20.0"
- source: "golang:1.22.5-alpine"
  amd64Only: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "images.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str) -> config.Config:
    return config.load(write(tmp_path, text))


def targets_of(loaded: config.Config) -> list[str]:
    return [str(image.target) for image in loaded.desired]


def test_original_file_loads_with_the_original_targets(tmp_path):
    loaded = load_text(tmp_path, ORIGINAL)

    assert targets_of(loaded) == [
        "eu.gcr.io/kyma-project/external/alpine:3.20.0",
        "eu.gcr.io/kyma-project/external/bitnami/keycloak-gatekeeper:9.0.3",
        "eu.gcr.io/kyma-project/external/busybox:1.31.1",
        "eu.gcr.io/kyma-project/external/golang:1.22.5-alpine",
    ]
    assert [image.line for image in loaded.desired] == [5, 3, 4, 7]
    assert [image.amd64_only for image in loaded.desired] == [False, False, False, True]
    assert loaded.path == tmp_path / "images.yaml"


def test_resolved_entry_keeps_raw_source_and_normalized_references(tmp_path):
    alpine = load_text(tmp_path, ORIGINAL).desired[0]

    assert alpine.source.as_written == "alpine@sha256:77726ef6b57ddf65bb551896826ec38bc3e53f75cdde31354fbffb4f25238ebd"
    assert alpine.source.repository == Repository("docker.io", "library/alpine")
    assert alpine.source.tag is None
    assert str(alpine.source.digest) == "sha256:77726ef6b57ddf65bb551896826ec38bc3e53f75cdde31354fbffb4f25238ebd"
    assert alpine.target == Reference(Repository("eu.gcr.io", "kyma-project/external/alpine"), "3.20.0")
    assert alpine.platforms == ()


@pytest.mark.parametrize(
    ("entry", "target"),
    [
        ('source: "quay.io/jetstack/cert-manager-controller:v1.15.1"',
         "p.example/mirror/quay.io/jetstack/cert-manager-controller:v1.15.1"),
        ('source: "localhost:5001/demo/app:1"', "p.example/mirror/localhost_5001/demo/app:1"),
        ('source: "busybox"', "p.example/mirror/busybox:latest"),
        ('{source: "docker.io/library/busybox:1"}', "p.example/mirror/docker.io/library/busybox:1"),
        ('{source: "busybox:1", tag: "1-mirror"}', "p.example/mirror/busybox:1-mirror"),
        ('{source: "busybox:1", target: "tools/bb"}', "p.example/mirror/tools/bb:1"),
        ('{source: "busybox", target: "tools/bb:stable"}', "p.example/mirror/tools/bb:stable"),
        ('{source: "busybox:1", target: "tools/bb", tag: "2"}', "p.example/mirror/tools/bb:2"),
        ('{source: "busybox@sha256:' + "a" * 64 + '", target: "tools/bb:3"}', "p.example/mirror/tools/bb:3"),
    ],
)
def test_target_derivation(tmp_path, entry, target):
    loaded = load_text(tmp_path, f"targetRepoPrefix: p.example/mirror\nimages:\n- {entry}\n")

    assert targets_of(loaded) == [target]


def test_platforms_are_sorted_without_repeats(tmp_path):
    loaded = load_text(tmp_path, """\
        targetRepoPrefix: p.example/
        images:
        - source: busybox:1
          platforms: [linux/arm/v7, linux/amd64, linux/arm/v7]
        """)

    assert loaded.desired[0].platforms == ("linux/amd64", "linux/arm/v7")


def test_empty_images_list_means_nothing_to_do(tmp_path):
    assert load_text(tmp_path, "targetRepoPrefix: p.example/\nimages: []\n").desired == ()


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as raised:
        config.load(tmp_path / "images.yaml")

    assert str(raised.value) == f"{tmp_path / 'images.yaml'}: file not found"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            """\
            targetRepoPrefix: p.example/
            images:
            - source: busybox:1
            - source: "busybox:1.31.1"
              tagg: "1"
            """,
            '5: images[2] (source "busybox:1.31.1"): unknown key "tagg"',
            id="unknown entry key",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nmirror: true\nimages: []\n",
            '2: unknown key "mirror"',
            id="unknown top-level key",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  tag: 3.20\n",
            '4: images[1] (source "busybox:1"): tag: expected a string, got a number 3.2',
            id="number where a string belongs",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  amd64Only: 'yes'\n",
            "4: images[1] (source \"busybox:1\"): amd64Only: expected a boolean, got a string 'yes'",
            id="string where a boolean belongs",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  platforms: linux/amd64\n",
            "4: images[1] (source \"busybox:1\"): platforms: expected a list, got a string 'linux/amd64'",
            id="platforms not a list",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- busybox:1\n",
            "3: images[1]: expected a mapping, got a string 'busybox:1'",
            id="entry not a mapping",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- tag: '1'\n",
            '3: images[1]: missing required key "source"',
            id="missing source",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: Busybox:1\n",
            '3: images[1] (source "Busybox:1"): source: invalid repository path \'library/Busybox\' in '
            "'Busybox': components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            id="invalid source reference",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox@sha256:" + "a" * 64 + "\n",
            f'3: images[1] (source "busybox@sha256:{"a" * 64}"): '
            'a source pinned by digest only needs "tag" for its target',
            id="digest-only source without tag",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  target: tools/Box\n",
            "4: images[1] (source \"busybox:1\"): target: makes an invalid target p.example/tools/Box:1: "
            "invalid repository path 'tools/Box' in 'p.example/tools/Box'"
            ": components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            id="invalid target",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: Quay.IO/app:1\n",
            "3: images[1] (source \"Quay.IO/app:1\"): source: makes an invalid target p.example/Quay.IO/app:1: "
            "invalid repository path 'Quay.IO/app' in 'p.example/Quay.IO/app'"
            ": components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            id="source that makes an invalid target",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  target: tools/bb:1\n  tag: '2'\n",
            '4: images[1] (source "busybox:1"): target: has a tag and "tag" is set too: keep one',
            id="tag given twice",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  target: tools/bb@sha256:" + "a" * 64 + "\n",
            '4: images[1] (source "busybox:1"): target: must not contain a digest',
            id="target with digest",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  platforms: [linux/amd64, Linux/ARM]\n",
            '4: images[1] (source "busybox:1"): platforms[2]: "Linux/ARM" is not a platform: '
            "write os/arch or os/arch/variant, lowercase",
            id="bad platform",
        ),
        pytest.param(
            """\
            targetRepoPrefix: p.example/
            images:
            - source: busybox:1.31.1
            - source: alpine:3
            - source: busybox:1
              tag: 1.31.1
            """,
            '5: images[3] (source "busybox:1"): target p.example/busybox:1.31.1 is also the target of '
            "images[1] (line 3)",
            id="two entries with one target",
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  source: busybox:2\n",
            '4: images[1] (source "busybox:1"): duplicate key "source"',
            id="duplicate key",
        ),
        pytest.param(
            'targetRepoPrefix: ""\nimages: []\n',
            "1: targetRepoPrefix: must not be empty",
            id="empty prefix",
        ),
        pytest.param("images: []\n", '1: missing required key "targetRepoPrefix"', id="missing prefix"),
        pytest.param(
            "targetRepoPrefix: p.example/\n", '1: missing required key "images"', id="missing images"
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n", "2: images: expected a list, got nothing", id="null images"
        ),
        pytest.param(
            "targetRepoPrefix: p.example/\nimages:\n- source: 'busybox:1\n",
            "4: invalid YAML: found unexpected end of stream",
            id="yaml syntax",
        ),
    ],
)
def test_strict_schema_errors_name_file_line_and_entry(tmp_path, text, message):
    path = write(tmp_path, text)

    with pytest.raises(InputError) as raised:
        config.load(path)

    assert str(raised.value) == f"{path}:{message}"
    assert "\n" not in str(raised.value)


def test_first_error_in_the_file_is_reported(tmp_path):
    path = write(tmp_path, """\
        targetRepoPrefix: p.example/
        images:
        - source: busybox:1
          amd64Only: 1
        - source: 7
        unknown: x
        """)

    with pytest.raises(InputError) as raised:
        config.load(path)

    assert raised.value.line == 4
    assert raised.value.entry == 'images[1] (source "busybox:1")'
    assert raised.value.problem == "amd64Only: expected a boolean, got a number 1"


def test_input_error_renders_one_line_and_skips_unknown_parts():
    assert str(InputError("images.yaml", "bad")) == "images.yaml: bad"
    assert str(InputError("images.yaml", "bad\nreally", line=3)) == "images.yaml:3: bad really"
    assert str(InputError("a.yaml", "bad", line=2, entry="images[1]")) == "a.yaml:2: images[1]: bad"


def test_prune_is_off_unless_the_file_says_true(tmp_path):
    entries = "images:\n- source: busybox:1\n"
    assert load_text(tmp_path, f"targetRepoPrefix: p.example/\n{entries}").prune is False
    assert load_text(tmp_path, f"targetRepoPrefix: p.example/\nprune: true\n{entries}").prune is True
    path = write(tmp_path, f"targetRepoPrefix: p.example/\nprune: 'yes'\n{entries}")

    with pytest.raises(InputError) as raised:
        config.load(path)

    assert str(raised.value) == f"{path}:2: prune: expected a boolean, got a string 'yes'"
