"""Evaluation of frozen features; adds scikit-learn, scipy and matplotlib to the training stack.

- ``run``: the run behind ``python -m ssl.evaluate`` (flags, encoder or baseline, outputs);
- ``splits``: spatially blocked train/test splits and few-label subsets;
- ``probes``: habitat classification probes (linear SVM, logistic regression, kNN) and metrics;
- ``spatial``: SP's spatial tasks (relative position and scale of patch pairs; jigsaw);
- ``handcrafted``: the hand-crafted baseline features;
- ``stats``: seeds and paired differences with their intervals (the reproduction's verdicts);
- ``report``: metrics.json, the markdown table and the figures.
"""
