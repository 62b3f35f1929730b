"""Re-identification evaluation in NumPy: blocked distances, Market-1501 metrics (CMC, official
and non-interpolated mAP, mINP), trial protocols, re-ranking, KISSME/XQDA and result reports.

No TensorFlow here: features come in as arrays, numbers and files go out.
"""
from jlml_tf.evaluation.distances import (distance_blocks, mahalanobis_blocks,  # noqa: F401
                                          pairwise_distances)
from jlml_tf.evaluation.metric_learning import Metric, fit_metric  # noqa: F401
from jlml_tf.evaluation.metrics import (evaluate_blocks, evaluate_distance_matrix,  # noqa: F401
                                        per_query_metrics)
from jlml_tf.evaluation.protocol import aggregate_trials, evaluate  # noqa: F401
from jlml_tf.evaluation.report import write_report  # noqa: F401
from jlml_tf.evaluation.rerank import k_reciprocal_rerank  # noqa: F401
