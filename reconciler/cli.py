"""The command line: parse options, call a workflow function, render what it returns.

Exit status: 0 ok; 1 a failure, a refusal or bad input (one ``error:`` line); 2 a usage
error (one ``error:`` line and where to find help), or changes with ``plan
--detailed-exitcode``; 130 interrupted (reported by ``reconciler.__main__``, which also
turns anything unexpected into one line).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # click, as typer bundles it

from reconciler.oci.errors import OCIError
from reconciler import config as config_file
from reconciler import arguments, compat, files, markdown, metrics, output, planfile, render, runtime, workflow
from reconciler.arguments import (
    AccessToken, CaFile, Debug, FormatOption, FromOption, ImagesFile, InsecureRegistry, LockFile, MaxDeletes,
    MaxRequests, MetricsFile, PlanFormat, Retries, ShardOption, TargetKeyFile, Timeout, UploadChunk,
)
from reconciler.apply import Report, TooManyDeletions, check_deletions
from reconciler.errors import InputError
from reconciler.progress import apply_progress
from reconciler.prune import DEFAULT_MAX_DELETES
from reconciler.registry import credentials
from reconciler.registry.options import tls_trust
from reconciler.registry.registries import Registries
from reconciler.runtime import Interruption, Stopped, note_signals, stop_if_signalled
from reconciler.session import SessionOptions, open_registries
from reconciler.shard import Shard

T = TypeVar("T")
INTERRUPTED = 130

app = typer.Typer(
    name="image-syncer",
    help="Mirror container images into a registry you control: pinned by digest, never overwritten.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # the original accepted -h
)


def _print_version(wanted: bool) -> None:
    if wanted:
        output.stdout.print(f"image-syncer {importlib.metadata.version('image-syncer')}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Options before any command."""




def _session(
    target_key_file: str | None, access_token: str | None, ca_file: str | None, insecure_registry: list[str] | None,
    max_requests: int, retries: int, timeout: float, upload_chunk_mib: int | None, debug: bool,
) -> SessionOptions:
    """The options every command that talks to registries shares, as the run's SessionOptions;
    logging is set up, and the CA file and the auth files are read, before any work."""
    output.setup_logging(debug)
    if ca_file:
        tls_trust(verify=True, ca_file=ca_file)  # loaded once per run; a bad file fails here, not per image
    credentials.check_auth_files()
    return arguments.session_options(target_key_file, access_token, ca_file, insecure_registry, max_requests,
                                     retries, timeout, upload_chunk_mib)


def _with_registries(
    session: SessionOptions, loaded: config_file.Config, work: Callable[[Registries], Awaitable[T]],
    interruption: Interruption | None = None,
) -> T:
    """``work`` given the run's registry clients, which are closed after it."""

    async def opened() -> T:
        targets = {entry.target.repository.registry for entry in (*loaded.desired, *loaded.tag_rules)}
        async with open_registries(session, targets) as registries:
            return await work(registries)

    return runtime.run(opened, interruption)


@app.command(epilog="Example: image-syncer lock --upgrade busybox:1.31.1")
def lock(
    names: Annotated[list[str] | None, typer.Argument(help="With --upgrade: only these sources or targets.")] = None,
    images_file: ImagesFile = Path("images.yaml"),
    lock_file: LockFile = None,
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Re-resolve all (or the named) entries.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only check the lock matches; write nothing.")] = False,
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """Pin every source of images.yaml to a digest in images.lock."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    if names and not upgrade:
        raise UsageError("naming sources needs --upgrade")
    loaded = workflow.load_config(images_file)
    lock_path = arguments.lock_path(images_file, lock_file)
    if check:
        lines = workflow.lock_problems(loaded, lock_path)
        output.to_step_summary(markdown.lock_check_markdown(str(lock_path), str(images_file), lines))
        if lines:
            output.print_error(f"{lock_path} does not match {images_file}: "
                               "run `image-syncer lock` and commit the result")
            for line in lines:
                output.stderr.print(f"  {line}", markup=False)
            raise typer.Exit(1)
        output.stderr.print(f"{lock_path} matches {images_file}.", markup=False)
        return
    files.check_writable(lock_path)
    result = _with_registries(session, loaded, lambda registries: workflow.lock(
        registries, loaded, lock_path, upgrade_all=upgrade and not names, upgrade_names=names or ()))
    if result.errors:
        for line in result.errors:
            output.print_error(str(line))
        output.stderr.print(f"{lock_path} left unchanged.", markup=False)
        raise typer.Exit(1)
    for target in result.resolved:
        output.stderr.print(f"  pinned {target}", markup=False)
    to_delete = {str(removed.target) for removed in result.lock.removed}
    for target in result.dropped:
        output.stderr.print(f"  dropped {target}" + ("; apply deletes it (prune)" if target in to_delete else ""),
                            markup=False)
    for line in result.forgotten:
        output.stderr.print(f"  forgot {line}", markup=False)
    verb = "wrote" if result.written else "unchanged:"
    deletions = f", {len(to_delete)} to delete" if to_delete else ""
    output.stderr.print(f"{verb} {lock_path} ({len(result.lock.images)} images{deletions})", markup=False)


@app.command(epilog="Example: image-syncer plan --shard 1/4 --format markdown --out plan.json")
def plan(
    images_file: ImagesFile = Path("images.yaml"),
    lock_file: LockFile = None,
    output_format: FormatOption = PlanFormat.text,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan for `image-syncer apply PLANFILE`.")] = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there is something to create or delete.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List the unchanged images too, not only their count.")
    ] = False,
    shard: ShardOption = None,
    from_path: FromOption = None,
    max_deletes: MaxDeletes = DEFAULT_MAX_DELETES,
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """Show what apply would do, asking each registry with HEAD requests only."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    loaded = workflow.load_config(images_file)
    if out is not None:
        files.check_writable(out)
    lock_path = arguments.lock_path(images_file, lock_file)
    result = _with_registries(session, loaded, lambda registries: workflow.plan(registries, loaded, lock_path, shard,
                                                                                from_path))
    if out is not None:
        planfile.save(out, result)
    output.print_as(output_format, json_text=render.plan_json(result), markdown=markdown.plan_markdown(result),
                    text=render.plan_text(result, verbose=verbose))
    if out is not None:
        output.stderr.print(f"Saved the plan to {out}; apply it with `image-syncer apply {out}`.", markup=False)
    try:
        check_deletions(result.deletions, max_deletes)
    except TooManyDeletions as over:
        output.print_error(str(over).replace("nothing copied or deleted", "apply would refuse this plan"))
        raise typer.Exit(1) from None
    if result.has_refusals:
        raise typer.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise typer.Exit(2)


@app.command(epilog="Example: image-syncer apply --shard 1/4 plan.json")
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="A plan saved by `plan --out`; refused when stale.")] = None,
    images_file: ImagesFile = Path("images.yaml"),
    lock_file: LockFile = None,
    output_format: FormatOption = PlanFormat.text,
    shard: ShardOption = None,
    from_path: FromOption = None,
    metrics_file: MetricsFile = None,
    max_deletes: MaxDeletes = DEFAULT_MAX_DELETES,
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """Copy exactly the locked digests; refuse any target tag that holds something else."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    loaded = workflow.load_config(images_file)
    saved = planfile.load(plan_file) if plan_file is not None else None
    interruption = Interruption()

    async def work(registries: Registries) -> Report:
        with apply_progress(output.stderr) as observer:
            return await workflow.apply(registries, loaded, arguments.lock_path(images_file, lock_file), saved,
                                        observer=observer, interruption=interruption, shard=shard,
                                        from_path=from_path, max_deletes=max_deletes)

    _finish("apply", _with_registries(session, loaded, work, interruption), output_format, interruption, shard,
            metrics_file)


@app.command(epilog="Example (to carry across an air gap): image-syncer export mirror.tar")
def export(
    path: Annotated[Path, typer.Argument(help="A directory, or a .tar, to hold the OCI image layout.")],
    images_file: ImagesFile = Path("images.yaml"),
    lock_file: LockFile = None,
    output_format: FormatOption = PlanFormat.text,
    shard: ShardOption = None,
    metrics_file: MetricsFile = None,
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """Write the locked images and their referrers into one OCI image layout, reading only the sources."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    loaded = workflow.load_config(images_file)
    interruption = Interruption()

    async def work(registries: Registries) -> Report:
        with apply_progress(output.stderr) as observer:
            return await workflow.export(registries, loaded, arguments.lock_path(images_file, lock_file), path,
                                         observer=observer, interruption=interruption, shard=shard)

    _finish("export", _with_registries(session, loaded, work, interruption), output_format, interruption, shard,
            metrics_file)


def _finish(command: str, report: Report, output_format: PlanFormat, interruption: Interruption,
            shard: Shard | None, metrics_file: Path | None) -> None:
    """The report as chosen, and as metrics (also of a run that failed or was stopped); the exit status it
    calls for."""
    output.print_as(output_format, json_text=render.report_json(report),
                    markdown=markdown.report_markdown(report, command), text=render.report_text(report, command))
    if metrics_file is not None:
        files.write_atomic(metrics_file, metrics.report_metrics(command, shard, report))
    if interruption.signal is not None:
        raise Stopped(interruption.signal)
    if not report.ok:
        raise typer.Exit(1)


@app.command(epilog="Example (a scheduled job): image-syncer verify --format json > verify.json")
def verify(
    images_file: ImagesFile = Path("images.yaml"),
    lock_file: LockFile = None,
    output_format: FormatOption = PlanFormat.text,
    shard: ShardOption = None,
    metrics_file: MetricsFile = None,
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """Check that every locked target tag still holds its locked digest: HEAD requests to the target only."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    loaded = workflow.load_config(images_file)
    lock_path = arguments.lock_path(images_file, lock_file)
    started = time.monotonic()
    result = _with_registries(session, loaded, lambda registries: workflow.verify(registries, loaded, lock_path, shard))
    output.print_as(output_format, json_text=render.verify_json(result), markdown=markdown.verify_markdown(result),
                    text=render.verify_text(result))
    if metrics_file is not None:
        files.write_atomic(metrics_file, metrics.verification_metrics(result, time.monotonic() - started))
    if not result.ok:
        raise typer.Exit(1)


@app.command(epilog="Example: image-syncer sync -i images.yaml -t key.json --dry-run=false")
def sync(
    images_file: Annotated[
        Path, typer.Option("--images-file", "-i", envvar="SYNCER_IMAGES_FILE", help="YAML file listing the images.")
    ],
    dry_run: Annotated[
        str, typer.Option("--dry-run", "-d", envvar="SYNCER_DRY_RUN", metavar="BOOL",
                          help="Only report what would be copied (true|false).")
    ] = "true",
    target_key_file: TargetKeyFile = None, access_token: AccessToken = None, ca_file: CaFile = None,
    insecure_registry: InsecureRegistry = None, max_requests: MaxRequests = 64, retries: Retries = 4,
    timeout: Timeout = 60.0, upload_chunk_mib: UploadChunk = None, debug: Debug = False,
) -> None:
    """The original image-syncer: copy sources the target lacks, stop on a changed one. No lock file."""
    session = _session(target_key_file, access_token, ca_file, insecure_registry, max_requests, retries, timeout,
                       upload_chunk_mib, debug)
    dry = arguments.parse_bool(dry_run, "--dry-run")
    loaded = workflow.load_config(images_file)
    interruption = Interruption()

    async def work(registries: Registries) -> workflow.SyncResult:
        with apply_progress(output.stderr) as observer:
            return await workflow.sync(registries, loaded, dry, observer=observer, interruption=interruption)

    result = _with_registries(session, loaded, work, interruption)
    for image in result.images:
        line = f"{image.source.as_written} ({image.digest or 'unresolved'}) -> {image.target}: {image.status.value}"
        if image.message:
            line += f": {image.message}"
        failed = image.status in (workflow.SyncStatus.FAILED, workflow.SyncStatus.DIFFER)
        output.stdout.print(line, style="red" if failed else None, markup=False)
    if result.report is not None:
        output.stdout.print(render.report_text(result.report))
    elif dry:
        output.stdout.print("Dry run: nothing was copied (pass --dry-run=false to copy).", markup=False)
    if interruption.signal is not None:
        raise Stopped(interruption.signal)
    if not result.ok:
        raise typer.Exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit status (see the module's docstring)."""
    args = compat.rewrite(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        note_signals()
        stop_if_signalled()
        status = app(args=args, prog_name="image-syncer", standalone_mode=False)
        stop_if_signalled()
    except NoArgsIsHelpError as error:
        error.show()
        return error.exit_code
    except UsageError as error:
        output.print_usage_error(error, args)
        return error.exit_code
    except (InputError, OCIError) as error:
        output.print_error(str(error))
        return 1
    if status == INTERRUPTED:
        raise KeyboardInterrupt  # typer made a Ctrl-C exit status 130; the entry point reports every interrupt
    return status or 0

