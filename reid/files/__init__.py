"""The pipeline's own files: one module per kind of file, holding its checking loader (and, for
metrics.json/per_query.csv and features.pt, its writer), all built on ``reid.io`` and ``base``.

Every file a stage writes and a later stage reads back is written atomically through ``reid.io``, so a
crash leaves the previous complete file or none. A file can still be damaged afterwards (a disk that
filled up before ``reid.io`` existed, a copy cut short, a file edited or replaced by hand, the wrong
file passed to a stage run by hand). The loaders here refuse such a file with a ``DamagedFileError``
that names the file, what is wrong with it, and the Snakemake rule and command that write it, so the
fix (delete it, rerun that rule) is in the message. No loader deletes or rewrites a file.

==================  ====================================  =====================  ==============
kind                file                                  written by rule        module
==================  ====================================  =====================  ==============
``dataset_report``  ``results/{dataset}/dataset.json``    ``verify_dataset``     dataset_report
``mean_image``      ``results/{dataset}/mean_image.pt``   ``verify_dataset``     mean_image
``model``           ``.../seed{seed}/model.pt``           ``train``              model_file
``history``         ``.../seed{seed}/history.csv``        ``train``              history
``run_info``        ``.../seed{seed}/run.json``           ``train``              run_info
``features``        ``.../seed{seed}/features.pt``        ``extract``            features_file
``metrics``         ``.../seed{seed}/metrics.json``       ``evaluate``           metrics_file
``per_query``       ``.../seed{seed}/per_query.csv``      ``evaluate``           metrics_file
``comparisons``     ``results/{dataset}/comparisons.json`` ``comparisons``       comparisons
==================  ====================================  =====================  ==============

Torch files load with ``torch.load(..., weights_only=True)``: they hold tensors and plain Python
types only (dicts, lists, tuples, strings, numbers), never pickled objects.

Each module holds its kind's checking loader (``load_<kind>``, re-exported here) and, where the kind's
shape is built from a stage's results, its writer: ``features_file.write_features`` (features.pt) and
``metrics_file.write_evaluation`` (metrics.json and per_query.csv, committed together).
"""

from __future__ import annotations

from reid.files.base import KINDS, DamagedFileError, FileKind, load_json, load_torch
from reid.files.comparisons import COMPARISONS_KEYS, load_comparisons
from reid.files.dataset_report import load_dataset_report
from reid.files.features_file import FEATURE_SPLITS, load_features, write_features
from reid.files.history import load_history
from reid.files.mean_image import load_mean_image
from reid.files.metrics_file import METRICS_KEYS, load_metrics, load_per_query, text_sha256, write_evaluation
from reid.files.model_file import load_model_file
from reid.files.run_info import RUN_INFO_KEYS, load_run_info

__all__ = ["DamagedFileError", "FileKind", "KINDS", "load_torch", "load_json", "load_model_file",
           "load_features", "write_features", "load_mean_image", "load_run_info", "load_metrics",
           "load_per_query", "write_evaluation", "text_sha256", "load_dataset_report", "load_history",
           "load_comparisons", "FEATURE_SPLITS", "METRICS_KEYS", "RUN_INFO_KEYS", "COMPARISONS_KEYS"]
