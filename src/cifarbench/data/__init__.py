"""Data: fetch a verified source (``fetch``), read it in place (``sources``), build the arrays
the models train on (``prepare``). Stages ``download`` and ``prepare`` call into here; training
reads the prepared folder with :func:`load_prepared`, profiling its ``meta.json`` with
:func:`read_meta`."""

from cifarbench.data.fetch import OFFICIAL_CIFAR10_MD5, fetch_source, project_root
from cifarbench.data.prepare import (
                                     SOURCE_RECORD,
                                     DataMeta,
                                     PreparedData,
                                     channel_stats,
                                     decode_image,
                                     load_prepared,
                                     load_split,
                                     prepare_dataset,
                                     read_meta,
                                     save_prepared,
                                     save_split,
)
from cifarbench.data.sources import Limits, detect_layout, open_source

__all__ = ["OFFICIAL_CIFAR10_MD5", "SOURCE_RECORD", "DataMeta", "Limits", "PreparedData",
           "channel_stats", "decode_image", "detect_layout", "fetch_source", "load_prepared",
           "load_split", "open_source", "prepare_dataset", "project_root", "read_meta",
           "save_prepared", "save_split"]
