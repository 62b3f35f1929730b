"""JLML person re-identification (Li, Zhu, Gong, IJCAI 2017) on TensorFlow 2 and Keras 3."""
import os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI or AMX; on an
# AVX2 CPU they train JLML 1.3x (paper width) to 1.6x (half width) faster (BENCHMARKS.md). TF
# reads the variable once, when it loads: importing jlml_tf before tensorflow is what applies it.
# TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
