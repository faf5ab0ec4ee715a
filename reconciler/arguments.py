"""The command line's options as typer declares them, and the run's SessionOptions they make.

Each command names the options it takes in its own signature (cli.py); what they mean is
declared once here, like Terraform's command/arguments.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated

import typer

from reconciler import compat, files
from reconciler.registry.options import TransportOptions
from reconciler.registry.proxy import ProxySettings
from reconciler.registry.retry import RetryPolicy
from reconciler.session import SessionOptions
from reconciler.shard import Shard

ImagesFile = Annotated[
    Path,
    typer.Option("--images-file", "-i", envvar="SYNCER_IMAGES_FILE", help="The desired state.", show_default=True),
]
LockFile = Annotated[
    Path | None,
    typer.Option("--lock-file", "-l", help="The pins; default: the images file with the suffix .lock."),
]
TargetKeyFile = Annotated[
    str | None,
    typer.Option("--target-key-file", "-t", envvar="SYNCER_TARGET_KEY_FILE",
                 help="Google service-account JSON key for the target registry."),
]
AccessToken = Annotated[
    str | None,
    typer.Option("--access-token", envvar="SYNCER_ACCESS_TOKEN", show_envvar=False,
                 help="OAuth2 access token for the target (and Google) registries [SYNCER_ACCESS_TOKEN]."),
]
CaFile = Annotated[
    str | None,
    typer.Option("--ca-file", envvar="SSL_CERT_FILE", help="PEM bundle of CAs to trust instead of the system's."),
]
InsecureRegistry = Annotated[
    list[str] | None,
    typer.Option("--insecure-registry", help="Host that may be reached over plain HTTP or unverified TLS (repeatable)."),
]
MaxRequests = Annotated[
    int, typer.Option("--max-requests", min=1, help="Most requests in flight per registry; below it the "
                      "number adapts: it grows while answers come quickly and halves on 429, 503, lost "
                      "connections or slowing answers."),
]
MaxDeletes = Annotated[
    int, typer.Option("--max-deletes", min=0, help="Most tags prune may delete in one run (images.yaml's "
                      "prune: true); a plan with more is refused whole, nothing copied or deleted."),
]
Retries = Annotated[
    int, typer.Option("--retries", min=0, max=20, help="Further tries of a failed request or blob transfer "
                      "(connection lost, answer cut short, 408/429/5xx), with backoff and Retry-After."),
]
Timeout = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds a request may wait for the registry (to answer, "
                        "or to take or send more of a body) before it is abandoned; connecting: at most 10."),
]
UploadChunk = Annotated[
    int | None,
    typer.Option("--upload-chunk-mib", min=1, help="Upload blobs in PATCH chunks of this many MiB "
                 "(for registries that cap the size of one request); default: one streamed PUT."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Log each registry request (never secrets).")]


def parse_shard(text: str) -> Shard:
    """A bad K/N (or ``auto/N`` without its Indexed Job's index) as click's usage error: one line, exit 2."""
    try:
        return Shard.from_argument(text, os.environ)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


ShardOption = Annotated[
    Shard | None,
    typer.Option("--shard", metavar="K/N", parser=parse_shard,
                 help="Only shard K of N (1-based): N parallel jobs split the images so that no two write the same tag. "
                 "auto/N: K is JOB_COMPLETION_INDEX + 1 (a Kubernetes Indexed Job's pod)."),
]


class PlanFormat(str, enum.Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


FormatOption = Annotated[PlanFormat, typer.Option("--format", help="Output format.")]
FromOption = Annotated[
    Path | None,
    typer.Option("--from", metavar="PATH", help="Read every source from this export of the lock (a directory or "
                                                ".tar), not from the source registries."),
]


def check_metrics_file(path: Path | None) -> Path | None:
    """A --metrics-file that could not be written is refused before any work (one ``error:`` line)."""
    if path is not None:
        files.check_writable(path)
    return path


MetricsFile = Annotated[
    Path | None,
    typer.Option("--metrics-file", metavar="PATH", callback=check_metrics_file,
                 help="Also write the run's counts, bytes and duration here as Prometheus text, for "
                      "node-exporter's textfile collector (name it *.prom); written even when the run fails."),
]


def session_options(
    target_key_file: str | None, access_token: str | None, ca_file: str | None, insecure_registry: list[str] | None,
    max_requests: int, retries: int, timeout: float, upload_chunk_mib: int | None,
) -> SessionOptions:
    """The registry options every command shares, as the run's SessionOptions: --max-requests is the
    transport's max_connections, --retries the tries after the first."""
    return SessionOptions(
        transport=TransportOptions(
            ca_file=ca_file or None,  # SSL_CERT_FILE set but empty names no file
            insecure_registries=frozenset(insecure_registry or ()),
            max_connections=max_requests,
            retry=RetryPolicy(attempts=retries + 1),
            timeout=timeout,
            chunk_size=upload_chunk_mib * 1024 * 1024 if upload_chunk_mib else None,
            proxies=ProxySettings.from_environment(os.environ),
        ),
        target_key_file=target_key_file,
        access_token=access_token,
    )


def lock_path(images_file: Path, lock_file: Path | None) -> Path:
    """--lock-file, or the images file with the suffix .lock."""
    return lock_file if lock_file is not None else images_file.with_suffix(".lock")


def parse_bool(value: str, name: str) -> bool:
    """A Go-style boolean (the original's --dry-run), or click's usage error naming the option."""
    parsed = compat.parse_bool(value)
    if parsed is None:
        raise typer.BadParameter(f"{value!r} is not true or false", param_hint=f"'{name}'")
    return parsed
