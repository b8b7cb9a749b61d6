"""Evaluation of frozen features (``python -m ssl.evaluate``).

- ``splits``: spatially blocked train/test splits and few-label subsets;
- ``probes``: habitat classification probes (linear SVM, logistic regression, kNN) and metrics;
- ``spatial``: SP's spatial tasks (relative position and scale of patch pairs; jigsaw);
- ``report``: metrics.json, the markdown table and the figures.
"""
