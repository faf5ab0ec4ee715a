"""reconciler/arguments.py over plain values: what the options mean, apart from any command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from reconciler import arguments
from reconciler.registry.retry import RetryPolicy


def test_the_lock_file_defaults_to_the_images_file_with_the_suffix_lock():
    assert arguments.lock_path(Path("conf/mirror.yaml"), None) == Path("conf/mirror.lock")
    assert arguments.lock_path(Path("images.yaml"), Path("pins/images.lock")) == Path("pins/images.lock")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("1", True), ("0", False)])
def test_a_go_boolean_is_read(text, value):
    assert arguments.parse_bool(text, "--dry-run") is value


def test_anything_else_is_a_usage_error_naming_the_option():
    with pytest.raises(typer.BadParameter) as refused:
        arguments.parse_bool("maybe", "--dry-run")
    assert refused.value.format_message() == "Invalid value for '--dry-run': 'maybe' is not true or false"


def test_session_options_say_what_each_option_becomes(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    session = arguments.session_options("key.json", None, "", ["a.example"], max_requests=3, retries=0,
                                        timeout=7.5, upload_chunk_mib=2)
    transport = session.transport
    assert (transport.max_connections, transport.retry, transport.timeout, transport.chunk_size) == (
        3, RetryPolicy(attempts=1), 7.5, 2 * 1024 * 1024)
    assert transport.ca_file is None  # SSL_CERT_FILE set but empty names no file
    assert transport.insecure_registries == frozenset({"a.example"})
    assert session.target_key_file == "key.json"


def test_shard_auto_reads_the_indexed_jobs_completion_index(monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert str(arguments.parse_shard("auto/3")) == "2/3"
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(typer.BadParameter) as refused:
        arguments.parse_shard("auto/3")
    assert "JOB_COMPLETION_INDEX" in refused.value.format_message()
