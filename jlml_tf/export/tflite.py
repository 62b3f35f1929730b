"""TFLite files converted from the exported SavedModel's `serving_default` signature.

Every variant takes the same input as `serving_default`: RGB pixels as a uint8 batch
[N, H, W, 3] (N is dynamic: resize the input tensor), decoded and resized outside the model
(`preprocessing.load_image`), and returns float32 L2-normalised embeddings [N, D].

- `float32`:      the float graph, weights frozen.
- `float16`:      weights stored as float16 (half the size), computed in float32 on CPU.
- `dynamic_int8`: dynamic-range quantisation: int8 weights, float activations (TFLite keeps
                  weight tensors of fewer than 1024 values in float).
- `int8`:         full integer quantisation: int8 weights and int8 activations, calibrated on
                  real training images (`representative_dataset`): every Conv2D and
                  FullyConnected op runs in int8. The uint8 pixel input is cast and quantised
                  inside the model; a few cheap ops stay float32 (`INT8_FLOAT_OPS`: the
                  test-time flip's mirror, feature concatenation, a linear map's sphere and
                  the final L2 normalisation), so clients use every variant the same way and
                  the output is exactly unit-norm.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from jlml_tf.data.types import ImageTable
from jlml_tf.data import preprocessing
from jlml_tf.export.saved_model import DEFAULT_SIGNATURE, PIXELS_INPUT

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
DESCRIPTIONS = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 activations",
    "dynamic_int8": "int8 weights (dynamic-range quantisation), float32 activations",
    "int8": "int8 weights and activations in every conv/FC op (full integer, calibrated), "
            "uint8 pixel input, float32 L2-normalised output",
}


def description(variant: str, float_scopes: Sequence[str] = ()) -> str:
    """DESCRIPTIONS[variant], naming the layers the int8 variant keeps in float (convert)."""
    kept = (f"; the layers {', '.join(float_scopes)} kept in float"
            if variant == "int8" and float_scopes else "")
    return DESCRIPTIONS[variant] + kept


def calibration_images(source: Sequence[str | os.PathLike] | ImageTable, height: int, width: int,
                       count: int = 200, seed: int = 0) -> np.ndarray:
    """Decodes up to `count` images (a random sample) from files or an ImageTable -> uint8 batch.

    Unreadable files are an error here: calibration data should be clean training images.
    """
    items = list(source.images) if isinstance(source, ImageTable) else [os.fspath(p) for p in source]
    if not items:
        raise ValueError("calibration needs at least one training image; got none")
    if count < 1:
        raise ValueError(f"--calibration_count={count}: expected at least 1")
    rng = np.random.default_rng(seed)
    if len(items) > count:
        items = [items[i] for i in sorted(rng.choice(len(items), count, replace=False))]
    return preprocessing.load_images(items, height, width)


def representative_dataset(images: np.ndarray, batch_size: int = 1, bar=None,
                           description: str = "calibrating"):
    """A TFLiteConverter.representative_dataset over a uint8 pixel batch.

    `bar`: a tqdm-like factory (called with total=, desc=, unit=) for a progress bar over the
    images each time the converter goes through them; None for none."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"representative images must be a non-empty uint8 [N, H, W, 3] batch, "
                         f"got {images.dtype} {images.shape}")

    def generate():
        progress = bar(total=len(images), desc=description, unit="img") if bar else None
        try:
            for start in range(0, len(images), batch_size):
                yield {PIXELS_INPUT: images[start:start + batch_size]}
                if progress is not None:
                    progress.update(len(images[start:start + batch_size]))
        finally:
            if progress is not None:
                progress.close()

    return generate


# Ops left in float32 in the full-int8 model (every Conv2D and FullyConnected op stays int8 in
# weights and activations):
# - the final L2 normalisation (square, sum, rsqrt, minimum, multiply) and the input
#   normalisation's multiply: quantised, the normalisation rounds the unit-norm output to a
#   coarse int8 grid (norms off by up to ~4%); in float the embedding leaves the model unit-norm.
# - the test-time flip's mirror (REVERSE_V2): in int8 its output got quantisation parameters of
#   its own (scale 1.49, zero point -45, against its input's 1.0, -128) while the kernel copies
#   the bytes, so the mirrored branch saw rescaled, shifted pixels (CUHK01 split 0, paper width
#   at 160x64: rank-1 46.1 instead of 60.7; 58.6 with the mirror in float).
# - a linear map's sphere (sqrt, sub, concatenation): one int8 scale for coordinates below 0.1
#   and a last one near 1 leaves the former about 25 levels (59.3 with these in float too).
#   By op type, so the input normalisation's subtraction and the branch features'
#   concatenations run in float too: elementwise, a negligible share of the compute.
INT8_FLOAT_OPS = ["SQUARE", "SUM", "RSQRT", "MINIMUM", "MAXIMUM", "MUL", "REVERSE_V2", "SQRT",
                  "SUB", "CONCATENATION"]


def scope_tensor_names(model: bytes, scope: str) -> list[str]:
    """Output tensor names of the ops a .tflite model (bytes) ran under the Keras layer named
    `scope` (TF names them ".../scope/..." or ".../scope_1/...")."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    pattern = re.compile(rf"/{re.escape(scope)}(_\d+)?/")
    return sorted({names[o] for op in interpreter._get_ops_details()  # noqa: SLF001
                   for o in op["outputs"] if pattern.search(names[o])})


def _scope_nodes(saved_model_dir, scopes: Sequence[str], float_model: bytes | None = None
                 ) -> list[str]:
    """Tensor names of the ops under each scope, as a float conversion names them (the
    quantiser's input; `float_model` if already converted); ValueError if a scope has none (it
    would be quantised silently)."""
    model = float_model or tf.lite.TFLiteConverter.from_saved_model(
        os.fspath(saved_model_dir), signature_keys=[DEFAULT_SIGNATURE]).convert()
    nodes = []
    for scope in scopes:
        found = scope_tensor_names(model, scope)
        if not found:
            raise ValueError(f"no op of the model runs under the layer {scope!r} that the int8 "
                             "variant must keep in float")
        nodes += found
    return nodes


def convert(saved_model_dir: str | os.PathLike, variant: str,
            calibration: np.ndarray | None = None, bar=None,
            float_scopes: Sequence[str] = (), float_model: bytes | None = None) -> bytes:
    """Converts the SavedModel's `serving_default` signature into one TFLite variant.

    `bar`: a tqdm-like factory for progress bars over the calibration images (int8 only: the
    float conversions are single calls with nothing to count).
    `float_scopes`: in the int8 variant, keep every op of the Keras layers of these names in
    float too. A fused map's (pipeline.export_run): LOMO, whose pixel codes and window counts
    lose whole steps when quantised (VIPeR split 0: 18 R1 below float32), and the map, whose
    input [embedding, LOMO] mixes two scales one int8 scale serves badly (2.85 R1 below float
    with only LOMO kept float)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; known: {list(VARIANTS)}")
    if variant == "int8" and calibration is None:
        raise ValueError("the full int8 variant needs calibration images (training images "
                         "decoded to a uint8 batch); pass calibration=")
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir),
                                                         signature_keys=[DEFAULT_SIGNATURE])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = representative_dataset(
            calibration, batch_size=8, bar=bar, description="int8: calibrating")
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # inference_input/output_type stay float32 (the default): the uint8 pixel input is not
        # a float tensor so it is left alone (cast, then quantised inside the model), and the
        # output is the float32 L2-normalised embedding. The selective quantisation below is
        # TFLite's documented way to keep chosen ops in float (QuantizationDebugger).
        float_nodes = (_scope_nodes(saved_model_dir, float_scopes, float_model)
                       if float_scopes else None)
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=INT8_FLOAT_OPS, denylisted_nodes=float_nodes, fully_quantize=False)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(
                calibration, batch_size=8, bar=bar, description="int8: checking"),
            debug_options=options)
        return debugger.get_nondebug_quantized_model()
    return converter.convert()


def write(content: bytes, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
    return path


def describe(model_path: str | os.PathLike) -> dict:
    """Input/output tensors and the data types of weights and activations of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(model_path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def io(detail):
        scale, zero = detail["quantization"]
        return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
                "shape": [int(d) for d in detail["shape_signature"]],
                "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}

    compute_ops = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    weights, activations = {}, {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op-level view LiteRT gives
        if op["op_name"] not in compute_ops:
            continue
        ins = [tensors[i] for i in op["inputs"] if i >= 0]
        if len(ins) >= 2:
            kind = np.dtype(ins[1]["dtype"]).name
            weights[kind] = weights.get(kind, 0) + 1
        kind = np.dtype(ins[0]["dtype"]).name
        activations[kind] = activations.get(kind, 0) + 1
    return {"inputs": [io(d) for d in interpreter.get_input_details()],
            "outputs": [io(d) for d in interpreter.get_output_details()],
            "ops": sorted({op["op_name"] for op in interpreter._get_ops_details()}),  # noqa: SLF001
            # per Conv2D / FullyConnected op: data type of its weights and of its input activation
            "compute_op_weight_dtypes": weights, "compute_op_activation_dtypes": activations,
            "size_bytes": os.path.getsize(model_path)}

