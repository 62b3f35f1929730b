"""JLML person re-identification (Li, Zhu, Gong, IJCAI 2017) on TensorFlow 2 and Keras 3."""
__version__ = "0.1.0"
