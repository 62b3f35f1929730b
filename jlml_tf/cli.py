"""What the command-line tools share: key=value options and run_main(), the one way a command
parses its flags and turns bad input into `error: ...` with exit status 2, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import flags


class UsageError(Exception):
    """Bad input: printed as `error: ...` with exit status 2."""


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


def extra_train_spec(spec: str) -> tuple[str, str | None, str | None]:
    """(name, protocol, manual_dir) of one --extra_train item; the folder keeps any further ':'."""
    name, _, rest = spec.partition(":")
    protocol, _, manual_dir = rest.partition(":")
    return name, protocol or None, manual_dir or None


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
             doc: str, argv: Sequence[str] | None = None,
             bad_input: tuple[type[Exception], ...] = ()) -> int:
    """The one way every command runs: parses its own FlagValues (so commands never clash in
    one process; --flagfile works), runs it and prints its summary. UsageError, flag errors,
    FileNotFoundError and the `bad_input` types become `error: ...` on stderr. TensorFlow's
    C++ log lines are kept away unless the environment asks for them (set before TF loads).
    Returns the exit status: 0 ok, 2 bad input."""
    from jlml_tf import tf_quiet

    os.environ.setdefault(tf_quiet.ENV, tf_quiet.QUIET_LEVEL)
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
    except (flags.Error, UsageError, FileNotFoundError, *bad_input) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:
        print(summary)
    return 0
