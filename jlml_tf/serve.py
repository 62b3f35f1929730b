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



def define_flags() -> flags.FlagValues:
    """The command's own flags (importing the module defines none globally)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("model_base_path", None, "DIR/<model_name>: the folder of version folders.",
                        **d)
    flags.DEFINE_string("model_name", None, "Model name in request URLs (default: the folder name).",
                        **d)
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).",
                        **d)
    flags.DEFINE_integer("rest_port", 8501, "REST port; 0 for a free port, -1 for no REST API.",
                         **d)
    flags.DEFINE_integer("grpc_port", 8500, "gRPC port; 0 for a free port, -1 for no gRPC API.",
                         **d)
    flags.DEFINE_float("poll_seconds", 1.0, "How often to look for new versions (0: never).", **d)
    flags.DEFINE_integer("max_request_bytes", 64 * 1024 * 1024, "Largest request body / message.",
                         **d)
    flags.DEFINE_integer("max_batch", 1024, "Largest batch in one request.", **d)
    flags.DEFINE_integer("num_threads", 0, "TensorFlow intra-op threads (0: all cores).", **d)
    return fv


UsageError = cli.UsageError  # `error: ...` on stderr, exit status 2 (no help text)


def run(fv: flags.FlagValues) -> None:
    if not fv.model_base_path:
        raise UsageError("--model_base_path is required (EXPORT_DIR/<model_name>, the folder "
                         "of version folders 1, 2, ...)")
    for name in ("rest_port", "grpc_port"):
        if not -1 <= fv[name].value <= 65535:
            raise UsageError(f"--{name}={fv[name].value}: expected -1..65535")
    if fv.rest_port == -1 and fv.grpc_port == -1:
        raise UsageError("--rest_port=-1 and --grpc_port=-1: nothing to serve")
    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    import tensorflow as tf

    from jlml_tf.serving.server import check_base_path

    try:
        check_base_path(pathlib.Path(fv.model_base_path))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    # The server's own log (versions loaded, requests refused) at INFO; TensorFlow's stays
    # quiet (its "tensorflow" logger is at ERROR).
    py_logging.basicConfig(level=py_logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if fv.num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(fv.num_threads)
    from jlml_tf.serving.server import BindError, ModelServer

    try:
        server = ModelServer(fv.model_base_path, fv.model_name, fv.host,
                             None if fv.rest_port == -1 else fv.rest_port,
                             None if fv.grpc_port == -1 else fv.grpc_port,
                             fv.poll_seconds, fv.max_request_bytes, fv.max_batch)
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
            print(f"REST {fv.host}:{server.rest_port}", flush=True)
        if server.grpc_port is not None:
            print(f"gRPC {fv.host}:{server.grpc_port}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("stopped", flush=True)


def main(argv=None) -> int:
    return cli.run_main(define_flags, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
