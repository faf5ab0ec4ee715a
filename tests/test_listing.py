"""A listing's pages read as plain bytes (reconciler/registry/listing.py): the next page's Link, and a tags
page's tags counted before any is made."""

from __future__ import annotations

import json

import pytest

from reconciler.oci import limits
from reconciler.registry.errors import RegistryError
from reconciler.registry.listing import next_link, page_tags


@pytest.mark.parametrize(("header", "target"), [
    ('</v2/app/tags/list?n=2&last=b>; rel="next"', "/v2/app/tags/list?n=2&last=b"),
    ("</v2/app/tags/list?last=b>; rel=next", "/v2/app/tags/list?last=b"),
    ('<https://a.example/first>; rel="prev", <https://a.example/next>; rel="next"', "https://a.example/next"),
    ('</v2/app/tags/list?last=b>; rel="prev"', None),
    ('/v2/app/tags/list; rel="next"', None),
    (None, None),
    ("", None),
])
def test_only_a_link_marked_next_and_in_angle_brackets_is_followed(header, target):
    assert next_link(header) == target


def page(tags, **beside) -> bytes:
    return json.dumps({"name": "app", "tags": tags, **beside}).encode()


def test_a_page_s_tags_are_read_within_the_room_left():
    assert page_tags(page(["v1", "v2"]), room=2, where="r/app") == ["v1", "v2"]
    assert page_tags(page(None), room=0, where="r/app") == []


def test_more_tags_than_the_room_left_are_refused_naming_the_repository():
    with pytest.raises(RegistryError, match=f"^r/app: tags/list lists more than the limit of "
                                            f"{limits.TAGS_PER_REPOSITORY} tags; refused$"):
        page_tags(page(["v1", "v2", "v3"]), room=2, where="r/app")


def test_strings_beside_the_tags_do_not_count_against_the_room():
    manifests = {f"sha256:{n:064x}": {"tag": [f"t{n}"], "mediaType": "x"} for n in range(50)}
    assert page_tags(page(["v1", "v2"], manifests=manifests), room=2, where="r/app") == ["v1", "v2"]


def test_a_page_without_a_list_of_tags_is_one_line():
    for answer in (b"[]", b'{"tags": 3}', b"not json"):
        with pytest.raises(RegistryError, match="^r/app: tags/list answered no list of tags$"):
            page_tags(answer, room=10, where="r/app")
