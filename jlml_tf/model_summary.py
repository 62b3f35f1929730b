"""Model complexity as in the paper's table: parameters without classifier, multiply-adds, depth.

    python -m jlml_tf.model_summary                      # JLML-ResNet39 at 224x96
    python -m jlml_tf.model_summary --compare=resnet50,vgg16,inception_v3,mobilenet_v2

Multiply-adds are counted analytically from every Conv2D/DepthwiseConv2D/Dense layer (the
convention in which ResNet50 is 3.8-4.1e9 at 224x224); BN, pooling and additions are ignored.
Reference networks come from `keras.applications` with random weights (nothing is downloaded).
"""
from __future__ import annotations

import math
import sys

from absl import flags
import keras
from keras import layers

from jlml_tf import cli
from jlml_tf.config import ModelConfig
from jlml_tf.modeling import jlml

WEIGHTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)


def layer_macs(layer) -> int:
    out = layer.output.shape
    spatial = math.prod(out[1:-1])
    if isinstance(layer, layers.SeparableConv2D):
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        return spatial * cin * layer.depth_multiplier * (kh * kw + out[-1])
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return spatial * out[-1] * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return spatial * out[-1] * kh * kw * layer.input.shape[-1] // layer.groups
    if isinstance(layer, layers.Dense):
        return math.prod(layer.input.shape[1:]) * layer.units
    return 0


def count_macs(model: keras.Model, exclude: tuple[str, ...] = ()) -> int:
    """Multiply-adds of one forward pass; a nested model counts once per call in this model's
    graph (the test-time flip model runs the embedding twice)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            calls = sum(node.operation is layer for nodes in model._nodes_by_depth.values()
                        for node in nodes)
            total += calls * count_macs(layer, exclude)
        elif isinstance(layer, WEIGHTED) and layer.name not in exclude:
            total += layer_macs(layer)
    return total


def longest_weighted_path(model: keras.Model) -> int:
    """Number of weighted layers on the longest input-to-output path of a functional model."""
    depth = {}
    for layer in model.layers:  # functional models list layers in topological order
        parents = [p.operation.name for node in layer._inbound_nodes for p in node.parent_nodes]
        base = max((depth.get(p, 0) for p in parents), default=0)
        depth[layer.name] = base + (1 if isinstance(layer, WEIGHTED) else 0)
    return max(depth.values())


def jlml_row(cfg: ModelConfig) -> dict:
    training_model, _ = jlml.build_jlml(cfg)
    heads = tuple(jlml.classifier_layers(training_model))
    streams = (1 if cfg.branches in ("both", "global") else 0) + (
        cfg.num_stripes if cfg.branches in ("both", "local") else 0)
    return {"model": f"JLML (m={cfg.num_stripes})", "input": f"{cfg.input_height}x{cfg.input_width}",
            "macs": count_macs(training_model, exclude=heads),
            "params": jlml.feature_parameter_count(training_model),
            "depth": longest_weighted_path(training_model), "streams": streams}


REFERENCES = {
    "resnet50": keras.applications.ResNet50,
    "vgg16": keras.applications.VGG16,
    "inception_v3": keras.applications.InceptionV3,
    "mobilenet_v2": keras.applications.MobileNetV2,
}


def reference_row(name: str, height: int, width: int) -> dict:
    """A keras.applications network with random weights, its 1000-way classifier excluded."""
    if name not in REFERENCES:
        raise ValueError(f"--compare: unknown network {name!r}; known: {sorted(REFERENCES)}")
    # VGG16's fully connected layers need 224x224; the others run at any input.
    top = name == "vgg16"
    size = (224, 224) if top else (height, width)
    model = REFERENCES[name](weights=None, include_top=top, input_shape=(*size, 3), pooling="avg")
    head = ("predictions",) if top else ()
    head_params = model.get_layer("predictions").count_params() if top else 0
    return {"model": name, "input": f"{size[0]}x{size[1]}", "macs": count_macs(model, exclude=head),
            "params": model.count_params() - head_params,
            # the paper's depth counts the classifier (ResNet50: 50), as JLML's 39 does
            "depth": longest_weighted_path(model) + (0 if top else 1),
            "streams": 1}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | input | multiply-adds | parameters (no classifier) | depth | streams |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['input']} | {r['macs'] / 1e9:.2f}e9 | {r['params'] / 1e6:.2f}M "
              f"| {r['depth']} | {r['streams']} |" for r in rows]
    return "\n".join(lines)


def define_flags() -> flags.FlagValues:
    """The command's own flags (importing the module defines none globally)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_integer("input_height", 224, "Input height.", **d)
    flags.DEFINE_integer("input_width", 96, "Input width.", **d)
    flags.DEFINE_integer("num_stripes", 4, "Local stripes m.", **d)
    flags.DEFINE_list("compare", [], f"keras.applications networks to add: {sorted(REFERENCES)}.",
                      **d)
    return fv


def run(fv: flags.FlagValues) -> str:
    cfg = ModelConfig(input_height=fv.input_height, input_width=fv.input_width,
                      num_stripes=fv.num_stripes)
    rows = [jlml_row(cfg)] + [reference_row(n, fv.input_height, fv.input_width)
                              for n in fv.compare]
    return markdown_table(rows)


def main(argv=None) -> int:
    return cli.run_main(define_flags, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
