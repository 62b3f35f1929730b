"""Exporting a trained JLML run for serving: SavedModel (TF Serving), TFLite, model card, parity.

    python -m jlml_tf.export --run_dir RUN --export_dir DIR [--model_name jlml] [--version N]

Library layout (each module imports TensorFlow lazily through its own imports only):
- `preprocessing`: the one definition of "image bytes -> pixel batch" shared by every format;
- `saved_model`:  the TF Serving SavedModel with `serving_default` (uint8 pixels) and
  `serving_bytes` (encoded JPEG/PNG) signatures, written atomically as DIR/<name>/<version>/;
- `tflite`:       float32, float16, dynamic-range int8 and full int8 TFLite files;
- `parity`:       every format against the Keras model (differences, rank-1/mAP, size, latency);
- `model_card`:   the model card (Markdown + JSON) and the analytic multiply-add count;
- `pipeline`:     the whole export, as run by the CLI (`python -m jlml_tf.export`).
"""
