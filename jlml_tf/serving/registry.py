"""Which model versions are served: the newest loadable version directory under the base path.

Like TF Serving's default file-system source (`latest` policy, one version): the base path is
polled every `poll_seconds`; a new, higher integer-named directory holding a saved_model.pb is
loaded, then swapped in (requests in flight finish on the old version), and the old one is
released. A version that fails to load is reported in the model status and retried only when
its saved_model.pb changes; the previous version keeps serving. If the served version's
directory is deleted, the newest remaining one is loaded.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import threading

import grpc
import tensorflow as tf

from jlml_tf.serving import core

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Servable:
    name: str
    version: int
    path: pathlib.Path
    loaded: object
    signatures: dict[str, core.Signature]
    signature_def_map: object  # get_model_metadata_pb2.SignatureDefMap

    def signature(self, name: str | None) -> core.Signature:
        name = name or core.DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise core.invalid(f'Serving signature key "{name}" not found. Known: '
                               f"{sorted(self.signatures)}")
        return self.signatures[name]


def load_servable(name: str, version: int, path: pathlib.Path) -> Servable:
    loaded = tf.saved_model.load(os.fspath(path), tags=["serve"])
    return Servable(name, version, path, loaded, core.signatures_of(loaded),
                    core.signature_def_map(path))


def _fingerprint(path: pathlib.Path):
    """None until saved_model.pb exists; then (files, bytes, newest mtime) of the directory, so a
    version that failed while still being copied is retried once the copy changes it."""
    if not (path / "saved_model.pb").is_file():
        return None
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return (len(files), sum(st.st_size for st in files), max(st.st_mtime_ns for st in files))


class ModelRegistry:
    """Serves the newest version of one model found under `base_path`."""

    def __init__(self, model_name: str, base_path: str | os.PathLike, poll_seconds: float = 1.0):
        self.model_name = model_name
        self.base_path = pathlib.Path(base_path)
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._failed: dict[int, tuple[object, str]] = {}  # version -> (fingerprint, error)
        self._loading: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loads = 0  # successful loads, for tests and logs

    # -- discovery ---------------------------------------------------------------------------
    def _versions_on_disk(self) -> dict[int, pathlib.Path]:
        if not self.base_path.is_dir():
            return {}
        return {int(p.name): p for p in self.base_path.iterdir()
                if p.is_dir() and re.fullmatch(r"\d+", p.name)}

    def refresh(self) -> bool:
        """One poll: loads the newest loadable version if it is not served. True if it changed."""
        on_disk = self._versions_on_disk()
        current = self._current
        for version in [v for v in self._failed if v not in on_disk]:
            del self._failed[version]  # deleted since: forget its failure
        for version in sorted(on_disk, reverse=True):
            if current is not None and version == current.version:
                return False  # the newest loadable version is already served
            if current is not None and version < current.version and current.version in on_disk:
                return False
            path = on_disk[version]
            fingerprint = _fingerprint(path)
            if fingerprint is None:
                continue  # not a SavedModel (yet): skip without reporting
            failed = self._failed.get(version)
            if failed is not None and failed[0] == fingerprint:
                continue  # failed before and unchanged since
            self._loading = version
            try:
                servable = load_servable(self.model_name, version, path)
            except Exception as e:  # noqa: BLE001 - any load failure is reported, not fatal
                message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
                log.warning("model %s version %d failed to load: %s", self.model_name, version,
                            message)
                self._failed[version] = (fingerprint, message)
                continue
            finally:
                self._loading = None
            with self._lock:
                self._current = servable
                self._failed.pop(version, None)
            self.loads += 1
            log.info("model %s: serving version %d from %s", self.model_name, version, path)
            return True
        if current is not None and current.version not in on_disk:
            with self._lock:  # its directory is gone and nothing else loads
                self._current = None
            log.warning("model %s: version %d was removed; nothing to serve", self.model_name,
                        current.version)
            return True
        return False

    # -- polling -----------------------------------------------------------------------------
    def start(self) -> "ModelRegistry":
        self.refresh()
        if self.poll_seconds and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name=f"poll-{self.model_name}",
                                            daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep polling whatever happens on disk
                log.exception("model %s: polling %s failed", self.model_name, self.base_path)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # -- lookup ------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> Servable:
        if name != self.model_name:
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                    f"Servable not found for request: {request}")
        servable = self._current
        if servable is None or (version is not None and servable.version != version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            served = f"; serving version {servable.version}" if servable else \
                f"; no version loaded from {self.base_path}"
            raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                    f"Servable not found for request: {request}{served}")
        return servable

    def status(self, name: str, version: int | None = None):
        """GetModelStatusResponse for the model (all known versions, or one)."""
        from tensorflow_serving.apis import get_model_status_pb2

        if name != self.model_name:
            raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                    f"Could not find any versions of model {name}")
        states = get_model_status_pb2.ModelVersionStatus
        rows = {}
        for v, (_, message) in self._failed.items():
            rows[v] = (states.END, 3, message)  # error code 3: INVALID_ARGUMENT
        if self._loading is not None:
            rows[self._loading] = (states.LOADING, 0, "")
        if self._current is not None:
            rows[self._current.version] = (states.AVAILABLE, 0, "")
        if version is not None:
            if version not in rows:
                raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                        f"Could not find version {version} of model {name}")
            rows = {version: rows[version]}
        if not rows:
            raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                    f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in sorted(rows, reverse=True):
            state, code, message = rows[v]
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = state
            entry.status.error_code = code
            entry.status.error_message = message
        return response
