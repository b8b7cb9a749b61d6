"""Evaluate a trained encoder: habitat probes on frozen features, spatially blocked splits.

    python -m ssl.evaluate --checkpoint runs/geoclr/last.pt \\
        --manifest data/seafloor/manifests/pairs.parquet --out runs/geoclr/eval

Features are the pooled backbone features of every full frame (resized to the training size,
batched on the GPU when there is one). Probes (linear SVM and logistic regression after PCA to
128 dimensions and at full width, cosine kNN with k = 20) are trained on the training side of a
spatially blocked split (blocks of side >= 2 r_loc; training images within r_loc of a test image
are dropped), with 10, 50 and all labels per class, and scored on the test side; macro-F1 is the
headline, mean ± std over seeds (each seed moves the blocks and redraws the few-label subsets).
CSP checkpoints add probes on the location embeddings alone and fused with the image features;
SP checkpoints add SP's spatial tasks. Writes metrics.json, table.md and figures to --out.

``--cross-dive`` tests on whole dives and trains on the others (another day, other water).

Baselines under the same protocol, instead of --checkpoint: ``--baseline random-init`` (a frozen
randomly initialised --backbone, --init-seed), ``--baseline handcrafted``
(``evaluation/handcrafted.py``: colour moments, gradient-orientation histograms, Fourier band energies)
and ``--baseline imagenet`` (torchvision's ImageNet weights of --backbone resnet18 or resnet50,
read from the local torch cache and never downloaded; ``training/pretrained.py``).
"""

import sys

from .evaluation.run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
