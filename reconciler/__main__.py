"""The entry point of ``image-syncer`` and ``python -m reconciler``: no traceback ever reaches a user.

Everything, even the CLI's own import, runs inside the guard, so a Ctrl-C or a broken
install while the libraries load is reported like any other.
"""

import sys


def main() -> None:
    try:
        from reconciler import cli

        status = cli.main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except Exception as error:  # a bug: one line, the traceback only when asked for
        import traceback

        from reconciler.errors import shorten

        if "--debug" in sys.argv[1:]:
            traceback.print_exc()
        message = shorten(" ".join(f"{type(error).__name__}: {error}".split()))
        print(f"error: internal error: {message} (run with --debug for the traceback)", file=sys.stderr)
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
