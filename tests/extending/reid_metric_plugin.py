"""docs/extending.md's worked example "A metric": R-precision, registered from outside ``reid/``.

R-precision of a query with m true matches is the share of true matches among its first m ranked
gallery images (junk and same-camera views removed, as for every metric); the metric is its mean
over the queries that have a true match (Manning, Raghavan & Schuetze, *Introduction to Information
Retrieval*, 2008, sec. 8.4; used for metric learning by Musgrave et al., ECCV 2020).

Config that uses it (the module must be importable by every job: on PYTHONPATH, or in the working
directory)::

    plugins: [reid_metric_plugin]

tests/extending/test_add_a_metric.py evaluates features with it and finds R-precision, with its
95% interval, in metrics.json, per_query.csv and Table 1.
"""

from __future__ import annotations

import numpy as np

from reid.metrics import keys


def r_precision(matches: keys.Matches) -> np.ndarray:
    """(V,) float64, one value per query with a true match: #{true matches ranked before m} / m."""
    m_of_each_match = np.repeat(matches.counts, matches.counts.astype(np.int64))  # its query's m
    return matches.per_query_sum((matches.rank < m_of_each_match).astype(np.float64)) / matches.counts


R_PRECISION = keys.register(keys.Metric(
    name="r_precision", label="R-precision", unit="fraction", table1=True,
    description="share of true matches among the first m ranked gallery images, m = the query's true "
                "matches (Manning et al., Introduction to Information Retrieval, 2008, sec. 8.4)",
    column=keys.Column("r_precision", r_precision, description="R-precision of the query")))
