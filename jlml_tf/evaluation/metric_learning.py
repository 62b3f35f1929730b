"""Metric learning baselines on fixed features: KISSME and XQDA.

The paper reports JLML features matched by KISSME and XQDA as worse than plain L2 (82.1 and
82.6 vs 85.1 rank-1 on Market-1501); these reproduce that comparison.

Both learners use the covariance of feature differences over all intra-class (same pid) and
extra-class (different pid) pairs. Enumerating pairs is quadratic, but the sum over ordered
pairs (i, j) of a group of (x_i - x_j)(x_i - x_j)^T equals 2 n sum_i x_i x_i^T - 2 s s^T
(n members, s their sum), so every pair covariance is a few matrix products over the training
set. Differences of ordered pairs have zero mean, so scatter / count is the covariance.

  KISSME (Koestinger et al., CVPR 2012): M = inv(Sigma_S) - inv(Sigma_D), projected onto the
      PSD cone (negative eigenvalues set to 0); optionally after PCA to `pca_dim` dimensions.
  XQDA (Liao et al., CVPR 2015): W = the generalised eigenvectors of (Sigma_E, Sigma_I) with
      the largest eigenvalues (all those > 1 by default, as in the paper), then
      M = inv(W^T Sigma_I W) - inv(W^T Sigma_E W) in the subspace. As in the paper and the
      authors' code, Sigma_I gets 0.001 added to its diagonal (an absolute amount: the features
      it was made for, LOMO's unit-norm blocks or L2-normalised embeddings, have a fixed
      scale). Features with more dimensions than training images are first expressed in an
      orthonormal basis of the training features' span (the authors use QR; here the
      eigenvectors of the n x n Gram matrix): no distance changes, and the eigenproblem is
      n x n instead of d x d (26,960 x 26,960 for LOMO). The paper's cross-view pairs (one
      image from each view) are `cross_camera=True` with each image's view as its camera id.

A `Metric` computes blocked query x gallery distances d(x, y) = (W^T (x - y))^T M W^T (x - y).
"xqda_map" / "kissme_map" are the learned metric's linear map L (`Metric.linear_map`), then
`onto_sphere`, then L2: what an exported model with the map built in computes. The learned
distance survives on unit-norm vectors, which the export, gallery index and threshold expect:
y = L^T x goes to (y / R, sqrt(1 - |y / R|^2)), one more dimension, with R = SPHERE_MARGIN times
the largest |y| over the training features. For |y|, |y'| <= rho R the new distance times R lies
between |y - y'| and |y - y'| / sqrt(1 - rho^2) (the last coordinates' difference is at most
rho / sqrt(1 - rho^2) of |y - y'| / R), so ranks change only between distances within 0.5 % at
rho = 0.1 (float32 rounding aside: the sphere's distances are small, so pairs closer than about
1e-3 of R may swap). Plain unit length instead (x -> unit(L^T x)) drops |y| and, measured, 3.4 R1 of
XQDA's 52.2 on CUHK01.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg

from jlml_tf.evaluation import distances as dist_lib

FITTERS = ("kissme", "xqda")
# "<learned>_map": the learned metric's linear map L, then onto_sphere, then L2: what a model
# exported with --linear_map computes, so it runs where only unit-norm L2 embeddings exist
MAPPED = "_map"
SPHERE_MARGIN = 10.0  # R / the largest training |L^T x|: distances kept within 0.5 % (above)
LEARNED_METRICS = FITTERS + tuple(f"{m}{MAPPED}" for m in FITTERS)  # fitted on training features
METRIC_NAMES = ("l2", "cosine") + LEARNED_METRICS  # the --metric choices of train and evaluate


@dataclasses.dataclass
class Metric:
    """A distance: a fixed one (matrix None, `base` names it) or a learned Mahalanobis one."""

    name: str
    base: str = "l2"  # distances.METRICS entry used when matrix is None
    matrix: np.ndarray | None = None  # (k, k) symmetric M
    projection: np.ndarray | None = None  # (dim, k) W, None = identity
    sphere_radius: float | None = None  # without M: x -> onto_sphere(W^T x, R) before `base`

    def embed(self, features, name: str = "features") -> np.ndarray:
        """The vectors a metric without M compares by `base`: W^T x, on the sphere if it has a
        radius (for a mapped metric, what the exported model outputs)."""
        if self.matrix is not None:
            raise ValueError(f"metric {self.name!r} compares through M, not embedded vectors")
        x = dist_lib.as_features(features, name)
        if self.projection is not None:
            x = x @ self.projection
        return x if self.sphere_radius is None else onto_sphere(x, self.sphere_radius, name)

    def distance_blocks(self, query, gallery, block_size: int | None = None):
        """Yields (query_rows, float32 distances), as distances.distance_blocks."""
        if self.matrix is None:
            return dist_lib.distance_blocks(self.embed(query, "query"),
                                            self.embed(gallery, "gallery"), self.base,
                                            block_size)
        return dist_lib.mahalanobis_blocks(query, gallery, self.matrix, self.projection,
                                           block_size)

    def linear_map(self, tolerance: float = 1e-6) -> np.ndarray:
        """L (dim x r) with d(x, y) = |L^T (x - y)|^2: a learned metric as squared L2 after a
        linear map, so matching can run where only L2 exists (an exported model, a vector
        index). M = U S U^T gives L = W U sqrt(S); directions with S = 0 are dropped. For XQDA,
        M = I - inv(Lambda) with every kept lambda > 1, so M is PSD and nothing is lost.
        Raises if M has an eigenvalue below -tolerance * its largest (not a squared L2)."""
        if self.matrix is None:
            raise ValueError(f"metric {self.name!r} is not learned; it has no linear map")
        values, vectors = scipy.linalg.eigh(np.asarray(self.matrix, np.float64))
        top = max(values.max(initial=0.0), np.finfo(np.float64).tiny)
        if values.min() < -tolerance * top:
            raise ValueError(f"metric {self.name!r}: M has eigenvalue {values.min():.3g} < 0, "
                             "so it is not a squared L2 distance after any linear map")
        keep = values > tolerance * top
        scaled = vectors[:, keep] * np.sqrt(values[keep])
        projection = np.eye(len(values)) if self.projection is None else self.projection
        return (np.asarray(projection, np.float64) @ scaled).astype(np.float32)

    def pairwise(self, query, gallery) -> np.ndarray:
        """The full float32 distance matrix (small problems)."""
        query = dist_lib.as_features(query, "query")
        out = np.empty((len(query), len(gallery)), np.float32)
        for rows, block in self.distance_blocks(query, gallery):
            out[rows] = block
        return out


def onto_sphere(mapped, radius: float, name: str = "features") -> np.ndarray:
    """(n, r) -> (n, r + 1) unit rows (y / R, sqrt(1 - |y / R|^2)): L2 distances between them are
    those between the y, divided by R, to within the bound in the module docstring. A row
    beyond R (not seen in fitting) gets last coordinate 0 and is scaled back to unit length."""
    scaled = dist_lib.as_features(mapped, name) / np.float32(radius)
    rest = np.sqrt(np.maximum(0.0, 1.0 - np.sum(np.square(scaled), axis=1, keepdims=True)))
    return dist_lib.l2_normalise(np.concatenate([scaled, rest], axis=1), name)


def sphere_radius(train_mapped) -> float:
    """R for onto_sphere: SPHERE_MARGIN times the largest norm among the mapped training rows."""
    largest = float(np.linalg.norm(dist_lib.as_features(train_mapped), axis=1).max(initial=0.0))
    return SPHERE_MARGIN * max(largest, float(np.finfo(np.float32).tiny))


def _pair_scatter(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Sum over ordered pairs i != j in the same group of (x_i - x_j)(x_i - x_j)^T, and the
    number of such pairs."""
    _, inverse, counts = np.unique(groups, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inverse, x)
    weighted = x * counts[inverse, None]
    scatter = 2.0 * (weighted.T @ x) - 2.0 * (sums.T @ sums)
    return scatter, int(np.sum(counts * (counts - 1)))


def pair_covariances(features, pids, camids=None, cross_camera: bool = False):
    """Covariances of x_i - x_j over same-pid pairs and over different-pid pairs.

    cross_camera: only pairs taken in different cameras (the cross-view setting of XQDA);
    needs every camid known. Returns (Sigma_same, n_same, Sigma_diff, n_diff).
    """
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)  # differences are unchanged; products are better conditioned
    pids = np.asarray(pids, np.int64)
    everyone = np.zeros(len(x), np.int64)
    all_s, all_n = _pair_scatter(x, everyone)
    pid_s, pid_n = _pair_scatter(x, pids)
    same_s, same_n, diff_s, diff_n = pid_s, pid_n, all_s - pid_s, all_n - pid_n
    if cross_camera:
        if camids is None or (np.asarray(camids) < 0).any():
            raise ValueError("cross_camera pairs need every training camera id known")
        camids = np.asarray(camids, np.int64)
        cam_s, cam_n = _pair_scatter(x, camids)
        both_s, both_n = _pair_scatter(x, np.stack([pids, camids], axis=1))
        # Inclusion-exclusion over the "same pid" and "same camera" pair sets.
        same_s, same_n = pid_s - both_s, pid_n - both_n
        diff_s = all_s - pid_s - cam_s + both_s
        diff_n = all_n - pid_n - cam_n + both_n
    if same_n == 0 or diff_n == 0:
        raise ValueError(f"need same-pid and different-pid pairs, got {same_n} and {diff_n}")
    return same_s / same_n, same_n, diff_s / diff_n, diff_n


def _ridge(cov: np.ndarray, regularisation: float) -> np.ndarray:
    """cov + r I, with r relative to the mean eigenvalue so it is scale free."""
    scale = max(np.trace(cov) / len(cov), np.finfo(np.float64).tiny)
    return cov + regularisation * scale * np.eye(len(cov))


def _pca(features: np.ndarray, dim: int) -> np.ndarray:
    x = features - features.mean(axis=0)
    _, vectors = scipy.linalg.eigh(x.T @ x)
    return vectors[:, ::-1][:, :dim]  # eigh sorts ascending


def fit_kissme(features, pids, camids=None, pca_dim: int | None = None,
               regularisation: float = 1e-3, cross_camera: bool = False) -> Metric:
    x = np.asarray(features, np.float64)
    projection = None
    if pca_dim is not None and pca_dim < x.shape[1]:
        projection = _pca(x, pca_dim)
        x = x @ projection
    sigma_s, _, sigma_d, _ = pair_covariances(x, pids, camids, cross_camera)
    m = (scipy.linalg.inv(_ridge(sigma_s, regularisation))
         - scipy.linalg.inv(_ridge(sigma_d, regularisation)))
    values, vectors = scipy.linalg.eigh((m + m.T) / 2)
    m_psd = (vectors * np.maximum(values, 0.0)) @ vectors.T  # nearest PSD matrix (Frobenius)
    return Metric("kissme", matrix=(m_psd + m_psd.T) / 2,
                  projection=None if projection is None else projection.astype(np.float32))


def span_coordinates(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of the centred rows of x (n x d) in an orthonormal basis Q of their span,
    from the n x n Gram matrix (no d x d or d x n factorisation; for n < d).

    Every difference, hence every XQDA/KISSME distance, is unchanged in these coordinates, so
    a data set's features can be reduced once to their span and each trial fitted there.

    Returns (z, centred, back): z (n x r) with x_i - x_j = Q (z_i - z_j), and Q = centred^T back
    (d x r), r the rank. With Xc = U S V^T: Q = V = Xc^T U S^-1 and z = U S.
    """
    x = np.asarray(x, np.float64)
    centred = x - x.mean(axis=0)
    values, vectors = scipy.linalg.eigh(centred @ centred.T)
    keep = values > values.max(initial=0.0) * len(x) * np.finfo(np.float64).eps * 10
    s = np.sqrt(values[keep])
    return vectors[:, keep] * s, centred, vectors[:, keep] / s


def fit_xqda(features, pids, camids=None, dim: int | None = None,
             regularisation: float = 1e-3, cross_camera: bool = False,
             subspace: bool | None = None) -> Metric:
    """XQDA on training features (n x d), identities and (for cross_camera) camera/view ids.

    dim: subspace dimension; None keeps every direction with eigenvalue > 1 (the paper).
    regularisation: added to the diagonal of Sigma_I (the paper's 0.001).
    subspace: work in the span of the training features; None = when d > n.
    """
    x = np.asarray(features, np.float64)
    span = None
    if subspace or (subspace is None and x.shape[1] > len(x)):
        x, centred, back = span = span_coordinates(x)
    sigma_i, _, sigma_e, _ = pair_covariances(x, pids, camids, cross_camera)
    sigma_i = sigma_i + regularisation * np.eye(len(sigma_i))
    # Generalised symmetric eigenproblem sigma_e w = l sigma_i w; W^T sigma_i W = I.
    values, vectors = scipy.linalg.eigh(sigma_e, sigma_i)
    values, vectors = values[::-1], vectors[:, ::-1]
    if dim is None:
        dim = max(1, int(np.sum(values > 1)))
    w = vectors[:, :dim]
    m = scipy.linalg.inv(w.T @ sigma_i @ w) - scipy.linalg.inv(w.T @ sigma_e @ w)
    projection = w if span is None else centred.T @ (back @ w)
    return Metric("xqda", matrix=(m + m.T) / 2, projection=projection.astype(np.float32))


def as_metric(metric: "str | Metric") -> "Metric":
    """A Metric as is, or a fixed metric's name (l2, cosine) as its Metric."""
    return fit_metric(metric) if isinstance(metric, str) else metric


def fit_metric(name: str, train_features=None, train_pids=None, train_camids=None,
               **options) -> Metric:
    """The --metric choice as a Metric. l2/cosine need no training data; kissme/xqda are fitted
    on the training features and pids (options go to fit_kissme / fit_xqda)."""
    if name in ("l2", "cosine", "sqeuclidean"):
        return Metric(name, base=name)
    fitters = {"kissme": fit_kissme, "xqda": fit_xqda}
    if name not in LEARNED_METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {METRIC_NAMES}")
    if train_features is None or train_pids is None:
        raise ValueError(f"metric {name!r} needs training features and pids")
    learned = fitters[name.removesuffix(MAPPED)](train_features, train_pids, train_camids,
                                                 **options)
    return mapped(learned, train_features) if name.endswith(MAPPED) else learned


def mapped(learned: Metric, train_features) -> Metric:
    """The "<learned>_map" metric of a fitted one: its linear map, then onto_sphere with the
    radius from the training features it was fitted on, then L2."""
    name = f"{learned.name}{MAPPED}"
    try:
        linear = learned.linear_map()
    except ValueError as e:  # e.g. no XQDA direction with eigenvalue > 1 (an untrained model)
        raise ValueError(f"{name}: the fitted {learned.name} is not a squared L2 distance after "
                         f"a linear map ({e}); use --metric={learned.name}") from e
    train_mapped = dist_lib.as_features(train_features) @ linear
    return Metric(name, base="l2", projection=linear, sphere_radius=sphere_radius(train_mapped))
