"""Re-id data set builders (TFDS), installed as `jlml_tf_datasets`.

Every data set module defines `PROTOCOLS` (name -> description) and
`load(protocol=None, data_dir=None, manual_dir=None, **options) -> ReidData`.
"""
from __future__ import annotations

import importlib

from jlml_tf.data.types import ReidData

# name -> module; modules import lazily so one missing optional dependency never breaks the rest.
MODULES = {
    "synthetic": "jlml_tf_datasets.synthetic",
    "market1501": "jlml_tf_datasets.market1501",
    "cuhk03": "jlml_tf_datasets.cuhk03",
    "cuhk01": "jlml_tf_datasets.cuhk01",
    "grid": "jlml_tf_datasets.grid",
    "viper": "jlml_tf_datasets.viper",
    "caviar4reid": "jlml_tf_datasets.caviar4reid",
    "folder": "jlml_tf_datasets.folder",
}


def module(name: str):
    if name not in MODULES:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(MODULES)}")
    return importlib.import_module(MODULES[name])


def protocols(name: str) -> dict[str, str]:
    return dict(module(name).PROTOCOLS)


def load(name: str, protocol: str | None = None, **kwargs) -> ReidData:
    mod = module(name)
    if protocol is not None and protocol not in mod.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} for data set {name!r}; "
                         f"known: {sorted(mod.PROTOCOLS)}")
    return mod.load(protocol=protocol, **kwargs)
