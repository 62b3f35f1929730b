"""Keeps TensorFlow's own log lines away from the users of the deployment commands.

`python -m jlml_tf.export | serve | embed | search` talk to people; TensorFlow talks to its
developers. Left alone it prints, on stderr:

- at import, from C++ through absl: "All log messages before absl::InitializeLog() ...", the
  oneDNN notice (`port.cc`), the CPU feature notice;
- while running: `jpeg_mem.cc ... Premature end of JPEG data` (an ERROR line for a broken file
  the command reports anyway), `local_rendezvous.cc ... aborting`;
- from Python: deprecation warnings (e.g. "tf.lite.Interpreter is deprecated", raised inside
  TFLite's quantisation debugger) and absl INFO lines;
- from the TFLite converter, straight to the file descriptors: `fully_quantize: 0, ...`.

`quiet_tensorflow()` is called by those commands before TensorFlow is imported: it sets
TF_CPP_MIN_LOG_LEVEL=3 (unless the user set it: `TF_CPP_MIN_LOG_LEVEL=0 python -m ...` brings
everything back), imports TensorFlow with the native stderr captured, and lowers absl's and
TensorFlow's Python loggers to ERROR. `native_output_captured()` captures what native code writes
to file descriptors 1 and 2 around a noisy call (TFLite conversion) and shows it only if the call
fails. Errors themselves reach the user as Python exceptions, reworded by the commands.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings

QUIET_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR lines
ENV = "TF_CPP_MIN_LOG_LEVEL"

# Python warnings TensorFlow raises about itself (not about the user's input).
_WARNINGS = (r".*tf\.lite\.Interpreter is deprecated.*",
             r".*Statistics for quantized inputs were expected.*",
             r".*Please consider providing the trackable_obj argument.*")


@contextlib.contextmanager
def native_output_captured(show_on_error: bool = True):
    """Sends what is written to file descriptors 1 and 2 (by C++ or by Python) to a temporary
    file for the duration, and yields a text stream on the real stderr (for progress bars).

    On an exception the captured text is written to the real stderr before the exception
    propagates, so a failure keeps its detail; on success it is dropped.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
    except OSError:  # no real descriptors (an embedding host): nothing to capture
        yield sys.stderr
        return
    real_stderr = io.TextIOWrapper(os.fdopen(os.dup(saved[2]), "wb", buffering=0),
                                   write_through=True, errors="replace")
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield real_stderr
        except BaseException:
            _restore(saved)
            if show_on_error:
                sink.seek(0)
                captured = sink.read().decode("utf-8", errors="replace").strip()
                if captured:
                    print(captured, file=sys.stderr)
            raise
        finally:
            _restore(saved)
            with contextlib.suppress(Exception):
                real_stderr.close()


def _restore(saved: dict[int, int]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for fd, copy in list(saved.items()):
        with contextlib.suppress(OSError):
            os.dup2(copy, fd)
            os.close(copy)
        saved.pop(fd)


_quiet = False  # set by quiet_tensorflow(): a command is talking to a person
_devnull: int | None = None


@contextlib.contextmanager
def native_stderr_silenced():
    """In a quiet command, what native code writes to file descriptor 2 during the block is
    dropped (libjpeg prints "Improper call to JPEG library in state 201" for some broken files
    whatever TensorFlow's log level). Elsewhere (tests, library use) it does nothing.
    Python's own writes to sys.stderr inside the block are flushed first and not expected."""
    global _devnull
    if not _quiet:
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        if _devnull is None:
            _devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2)
        os.dup2(_devnull, 2)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def silence_python_warnings() -> None:
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def quiet_tensorflow() -> None:
    """Called by a command before it imports TensorFlow (see the module docstring)."""
    global _quiet
    os.environ.setdefault(ENV, QUIET_LEVEL)
    _quiet = os.environ.get(ENV) == QUIET_LEVEL
    silence_python_warnings()
    if _quiet and "tensorflow" not in sys.modules:
        with native_output_captured():
            import tensorflow  # noqa: F401 - imported here for its import-time log lines
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
