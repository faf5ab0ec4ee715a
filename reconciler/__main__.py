"""The entry point of ``image-syncer`` and ``python -m reconciler``: no traceback ever reaches a user.

Everything, even the CLI's own import, runs inside the guard, so a Ctrl-C or a broken
install while the libraries load is reported like any other.
"""

import signal
import sys


def main() -> None:
    try:
        from reconciler.runtime import note_signals

        note_signals()  # before the CLI's imports, which take most of the start-up
        from reconciler import cli

        status = cli.main()
    except KeyboardInterrupt:
        status = _interrupted(signal.SIGINT)
    except BaseException as error:
        from reconciler.errors import internal_error
        from reconciler.runtime import stop_in

        stop = stop_in(error)
        if stop is not None:  # a SIGINT or SIGTERM, maybe wrapped by an import it interrupted
            status = _interrupted(stop.signum)
        elif not isinstance(error, Exception):
            raise  # SystemExit and the like
        else:  # a bug: one line, the traceback only when asked for
            import traceback

            if "--debug" in sys.argv[1:]:
                traceback.print_exc()
            print(f"error: {internal_error(error)}", file=sys.stderr)
            status = 1
    sys.exit(status)


def _interrupted(signum: int) -> int:
    """One word for Ctrl-C; the signal's name for any other; exit 128 + its number."""
    print("interrupted" if signum == signal.SIGINT else f"interrupted ({signal.Signals(signum).name})",
          file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    main()
