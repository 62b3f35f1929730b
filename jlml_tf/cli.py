"""What the command-line tools share: key=value options and a main() that turns bad input into
`error: ...` with exit status 2 instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import flags


class UsageError(Exception):
    """Bad input: printed as `error: ...` with exit status 2."""


def exit_on_usage_error(main: Callable[[Sequence[str]], object]) -> Callable[[Sequence[str]], None]:
    """`main` for absl's app.run: a UsageError becomes `error: ...` on stderr and exit status 2."""
    def wrapped(argv):
        try:
            main(argv)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapped


def run_quietly(main: Callable[[Sequence[str]], object]) -> None:
    """absl's app.run for a deployment command: TensorFlow's own log lines kept away (set
    before anything imports TF), `main` already wrapped for usage errors."""
    import os

    from jlml_tf import tf_quiet

    os.environ.setdefault(tf_quiet.ENV, tf_quiet.QUIET_LEVEL)
    from absl import app

    app.run(main)


def literal(text: str):
    """'true'/'false' -> bool, numbers -> int or float, anything else stays a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def key_values(items: Sequence[str] | None, flag: str) -> dict:
    """Parses ["a=1", "b=x"] from a list flag; an item without '=' is an error naming `flag`."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--{flag.lstrip('-')}: {item!r} is not key=value")
        out[key] = literal(value)
    return out


def run_main(define_flags: Callable[[], flags.FlagValues], run: Callable[[flags.FlagValues], str | None],
             doc: str, argv: Sequence[str] | None = None) -> int:
    """Parses a tool's own FlagValues (so tools never clash in one process), runs it and prints
    its summary. Returns the exit status: 0 ok, 2 bad input."""
    argv = list(sys.argv if argv is None else argv)
    fv = define_flags()
    if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
        print(doc + "\nFlags:\n" + fv.get_help())
        return 0
    try:
        rest = fv(argv)
        if len(rest) > 1:
            raise UsageError(f"unexpected arguments {rest[1:]}; flags take the form --name=value")
        summary = run(fv)
    except (flags.Error, UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:
        print(summary)
    return 0
