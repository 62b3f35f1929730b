"""A uniform "embedder" over every exported format: a SavedModel directory or a .tflite file.

    embedder = load_embedder("export/jlml/3")          # or "export/jlml_v3/tflite/int8.tflite"
    pixels = preprocessing.load_images(files, embedder.height, embedder.width)
    features = embedder.embed(pixels)                   # float32 [N, D], L2-normalised

Every embedder takes uint8 RGB pixels [N, H, W, 3] (the model normalises inside) and returns
what the model's output is: for exported models, L2-normalised float32 embeddings.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from jlml_tf.data import preprocessing
from jlml_tf.inference.gallery_index import resolve_model_path


class Embedder:
    """Base class: `embed(uint8 [N, H, W, 3]) -> float32 [N, D]`, in batches of `batch_size`."""

    kind = "?"
    height: int
    width: int

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check(self, pixels) -> np.ndarray:
        pixels = np.asarray(pixels)
        expected = (self.height, self.width, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(f"{self.kind} embedder expects a pixel batch [N, {self.height}, "
                             f"{self.width}, 3], got shape {pixels.shape}")
        if pixels.dtype != np.uint8:
            if np.issubdtype(pixels.dtype, np.floating) and (pixels.min(initial=0) < 0
                                                             or pixels.max(initial=0) > 255):
                raise ValueError("pixels must be in [0, 255] (RGB, not normalised); got "
                                 f"{pixels.min()}..{pixels.max()}")
            pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        return pixels

    def embed(self, pixels, batch_size: int = 32) -> np.ndarray:
        pixels = self.check(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        outs = [self._run(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
        return np.concatenate(outs).astype(np.float32)

    def embed_files(self, paths, batch_size: int = 32) -> np.ndarray:
        return self.embed(preprocessing.load_images(paths, self.height, self.width), batch_size)

    @property
    def dim(self) -> int:
        if getattr(self, "_dim", None) is None:
            self._dim = int(self._run(np.zeros((1, self.height, self.width, 3), np.uint8)).shape[-1])
        return self._dim


class KerasEmbedder(Embedder):
    """A Keras model on float pixels in [0, 255] (the reference for the parity report)."""

    kind = "keras"

    def __init__(self, model):
        self.model = model
        _, self.height, self.width, _ = model.input.shape

    def _run(self, pixels):
        return np.asarray(self.model(pixels.astype(np.float32), training=False))


class SavedModelEmbedder(Embedder):
    """An exported SavedModel's `serving_default` signature (uint8 pixels -> embeddings)."""

    kind = "saved_model"

    def __init__(self, path: str | os.PathLike, signature: str = "serving_default"):
        import tensorflow as tf

        self.path = pathlib.Path(path)
        self.loaded = tf.saved_model.load(os.fspath(self.path))
        if signature not in self.loaded.signatures:
            raise ValueError(f"{self.path}: no signature {signature!r}; it has "
                             f"{sorted(self.loaded.signatures)}")
        self.fn = self.loaded.signatures[signature]
        specs = self.fn.structured_input_signature[1]
        if len(specs) != 1:
            raise ValueError(f"{self.path}: signature {signature!r} must take one input, "
                             f"has {sorted(specs)}")
        (self.input_name, spec), = specs.items()
        if spec.shape.rank != 4:
            raise ValueError(f"{self.path}: signature {signature!r} takes {spec}, not a pixel "
                             "batch [N, H, W, 3]")
        _, self.height, self.width, _ = spec.shape.as_list()
        self.input_dtype = spec.dtype
        (self.output_name, _), = self.fn.structured_outputs.items()

    def _run(self, pixels):
        import tensorflow as tf

        x = tf.constant(pixels, dtype=self.input_dtype)
        return self.fn(**{self.input_name: x})[self.output_name].numpy()


class TFLiteEmbedder(Embedder):
    """A .tflite file run with LiteRT (`ai_edge_litert`), `num_threads` CPU threads."""

    kind = "tflite"

    def __init__(self, path: str | os.PathLike, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        from jlml_tf import tf_quiet

        self.path = pathlib.Path(path)
        try:  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" natively
            with tf_quiet.native_stderr_silenced():
                self.interpreter = Interpreter(model_path=os.fspath(self.path),
                                               num_threads=num_threads)
        except ValueError as e:
            raise ValueError(f"{self.path}: not a TFLite model ({e})") from e
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise ValueError(f"{self.path}: expected one [N, H, W, 3] input and one output")
        self.input, self.output = inputs[0], outputs[0]
        _, self.height, self.width, _ = (int(d) for d in self.input["shape"])
        self._batch = None

    def _run(self, pixels):
        interpreter, index = self.interpreter, self.input["index"]
        if self._batch != len(pixels):
            from jlml_tf import tf_quiet

            interpreter.resize_tensor_input(index, pixels.shape, strict=False)
            with tf_quiet.native_stderr_silenced():
                interpreter.allocate_tensors()
            self._batch = len(pixels)
        dtype = self.input["dtype"]
        scale, zero = self.input["quantization"]
        if dtype == np.uint8 and not scale:
            x = pixels
        elif scale:  # an integer-quantised input: quantise the pixels with its parameters
            info = np.iinfo(dtype)
            x = np.clip(np.round(pixels / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = pixels.astype(dtype)
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        y = interpreter.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        if scale:
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)


def load_embedder(path: str | os.PathLike, num_threads: int = 2) -> Embedder:
    """A SavedModel folder (a version folder, or a TF Serving base path: its newest version,
    as a model server would serve) or a .tflite file -> an Embedder.

    Errors name the path, not a flag: the command that passed it adds its flag."""
    path = pathlib.Path(path)
    if path.is_dir():
        resolved = resolve_model_path(path)
        if (resolved / "saved_model.pb").is_file():
            return SavedModelEmbedder(resolved)
        raise ValueError(f"{path}: a folder without saved_model.pb or numbered version folders "
                         "holding one is not a SavedModel")
    if path.is_file():
        if path.suffix != ".tflite":
            raise ValueError(f"{path}: expected a SavedModel folder or a .tflite file")
        return TFLiteEmbedder(path, num_threads=num_threads)
    raise FileNotFoundError(f"{path}: no such file or folder")


def flag_error(flag: str, value, error: Exception | str) -> str:
    """"--flag=value: reason" from an error that may already start with the value (library
    errors name the path they were given): the value is never repeated."""
    text = str(error).strip()
    value = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    for prefix in (f"--{flag}={value}:", f"{value}:", f"{pathlib.Path(value)}:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
            break
    return f"--{flag}={value}: {text}"

