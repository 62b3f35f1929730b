"""A local model server speaking the TF Serving REST and gRPC APIs (for development and tests).

Production serving is the real TF Serving binary on the exported SavedModel (see export/README.md);
this server lets the same client code run where that binary cannot be installed.

- `registry`:    loads the newest version directory under a model base path and polls for new ones;
- `core`:        request validation, tensor conversion, signatures, errors (`ServingError`);
- `rest`:        the REST API on `http.server.ThreadingHTTPServer`;
- `grpc_server`: `PredictionService` (Predict, GetModelMetadata) and `ModelService`
                 (GetModelStatus) from tensorflow-serving-api, on grpcio;
- `server`:      `ModelServer`, which runs all of them (`python -m jlml_tf.serve`).
"""
