"""Train image (and location) encoders from a pairs manifest.

    python -m ssl.train --manifest pairs.parquet --objective geoclr --sp 0.5 --steps 50

The manifest alone locates the location table and the image files. The loop is
`training/loop.fit` (schedule lookup -> batch -> augmentation on the device -> forward -> loss ->
backward -> step -> log -> checkpoint); the objectives it trains are in `training/objective.py`.
The learning rate, the data order (seed, epoch) and every random draw (seed, step, rank) are functions of the global step, so
`--resume` continues exactly; it refuses a manifest whose dataset (images, positions, pairs and
their policy, image bytes) differs from the checkpoint's and says what changed, while a rebuild
that changes none of these keeps the run resumable.
Multi-GPU / multi-node: `torchrun --nproc_per_node G -m ssl.train ...` (DDP; negatives are
gathered across ranks, BatchNorm is synchronised on CUDA).

Run folders: a run is never overwritten by accident. Without --out every run gets a new folder,
runs/<objective>-<UTC time YYYYmmdd-HHMMSS> (-2, -3, ... if taken). With --out the folder must
be new or empty; a folder that already holds a run (args.json, last.pt or metrics.jsonl) is
refused unless --resume continues it or --overwrite replaces it. --overwrite removes only the
files the trainer writes (args.json, last.pt, metrics.jsonl, metrics.csv, TensorBoard event
files) and leaves anything else, such as an evaluation in eval/, untouched; a folder that is not
empty but holds no run is refused even with --overwrite.
"""

import sys

from .training.run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
