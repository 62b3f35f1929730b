"""Hand-crafted person re-id features: LOMO (`lomo.py`), its Retinex pre-processing
(`retinex.py`) and an on-disk cache of a data set's features (`cache.py`)."""
