"""python -m jlml_tf.serve: a local server speaking the TF Serving REST and gRPC APIs.

    python -m jlml_tf.serve --model_base_path=export_out/jlml [--model_name=jlml] \
        [--rest_port=8501] [--grpc_port=8500] [--host=127.0.0.1] [--poll_seconds=1]

Serves the newest version folder under --model_base_path and picks up new ones while it runs.
A port of 0 takes a free port; -1 turns that API off. The bound ports are printed as
`REST <host>:<port>` / `gRPC <host>:<port>` lines. Ctrl-C (or SIGTERM) stops it.
For production, run real TF Serving on the same folder: see export/README.md.
"""
from __future__ import annotations

import logging as py_logging
import pathlib
import signal
import sys
import threading

from absl import flags

from jlml_tf import cli

FLAGS = flags.FLAGS
def define_flags() -> None:
    """CLI flags, defined only when run as a program (importing this module defines none)."""
    flags.DEFINE_string("model_base_path", None, "DIR/<model_name>: the folder of version folders.")
    flags.DEFINE_string("model_name", None, "Model name in request URLs (default: the folder name).")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
    flags.DEFINE_integer("rest_port", 8501, "REST port; 0 for a free port, -1 for no REST API.")
    flags.DEFINE_integer("grpc_port", 8500, "gRPC port; 0 for a free port, -1 for no gRPC API.")
    flags.DEFINE_float("poll_seconds", 1.0, "How often to look for new versions (0: never).")
    flags.DEFINE_integer("max_request_bytes", 64 * 1024 * 1024, "Largest request body / message.")
    flags.DEFINE_integer("max_batch", 1024, "Largest batch in one request.")
    flags.DEFINE_integer("num_threads", 0, "TensorFlow intra-op threads (0: all cores).")


UsageError = cli.UsageError  # `error: ...` on stderr, exit status 2 (no help text)


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    if not FLAGS.model_base_path:
        raise UsageError("--model_base_path is required (EXPORT_DIR/<model_name>, the folder "
                         "of version folders 1, 2, ...)")
    for name in ("rest_port", "grpc_port"):
        if not -1 <= FLAGS[name].value <= 65535:
            raise UsageError(f"--{name}={FLAGS[name].value}: expected -1..65535")
    if FLAGS.rest_port == -1 and FLAGS.grpc_port == -1:
        raise UsageError("--rest_port=-1 and --grpc_port=-1: nothing to serve")
    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    import tensorflow as tf

    from jlml_tf.serving.server import check_base_path

    try:
        check_base_path(pathlib.Path(FLAGS.model_base_path))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    # The server's own log (versions loaded, requests refused) at INFO; TensorFlow's stays
    # quiet (its "tensorflow" logger is at ERROR). absl's handler, installed by app.run, is the
    # root logger's, so it is absl's verbosity that lets these lines through.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    py_logging.basicConfig(level=py_logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if FLAGS.num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    from jlml_tf.serving.server import BindError, ModelServer

    try:
        server = ModelServer(FLAGS.model_base_path, FLAGS.model_name, FLAGS.host,
                             None if FLAGS.rest_port == -1 else FLAGS.rest_port,
                             None if FLAGS.grpc_port == -1 else FLAGS.grpc_port,
                             FLAGS.poll_seconds, FLAGS.max_request_bytes, FLAGS.max_batch)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
    except BindError as e:
        flag = "--rest_port" if e.api == "REST" else "--grpc_port"
        raise UsageError(f"{flag}={e.port}: {e}; is another server running there? Pick another "
                         f"port, 0 for a free one, or -1 to leave the {e.api} API off") from None
    try:
        current = server.registry._current  # noqa: SLF001 - for the start-up message only
        if current:
            print(f"model {server.model_name}: version {current.version}", flush=True)
        else:
            print(f"model {server.model_name}: no version yet; waiting for a numbered folder "
                  f"holding saved_model.pb under {server.base_path} (`python -m jlml_tf.export "
                  f"--export_dir={server.base_path.parent} --model_name="
                  f"{server.base_path.name}` writes one)", flush=True)
        if server.rest_port is not None:
            print(f"REST {FLAGS.host}:{server.rest_port}", flush=True)
        if server.grpc_port is not None:
            print(f"gRPC {FLAGS.host}:{server.grpc_port}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("stopped", flush=True)


_main = cli.exit_on_usage_error(main)


def run():
    cli.run_quietly(_main)


if __name__ == "__main__":
    define_flags()
    sys.exit(run())
