"""WWW-Authenticate parsing: the part of auth that needs no registry to check."""

from reconciler.registry.auth import Challenge, parse_challenges


def test_bearer_with_several_scopes_and_insufficient_scope():
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push repository:c/d:pull",error="insufficient_scope"'
    )
    assert parse_challenges(header) == [
        Challenge(
            scheme="bearer",
            realm="https://auth.example.com/token",
            service="registry.example.com",
            scopes=("repository:a/b:pull,push", "repository:c/d:pull"),
            error="insufficient_scope",
        )
    ]


def test_several_challenges_and_unquoted_values():
    header = 'Basic realm="Registry Realm", Bearer realm=https://t.example/token,service=svc'
    assert parse_challenges(header) == [
        Challenge(scheme="basic", realm="Registry Realm"),
        Challenge(scheme="bearer", realm="https://t.example/token", service="svc"),
    ]


def test_escaped_quotes_and_empty_header():
    assert parse_challenges('Basic realm="say \\"hi\\""') == [Challenge(scheme="basic", realm='say "hi"')]
    assert parse_challenges("") == []
