"""The read side: what the trainer, evaluation and mapping read, on a stock PyTorch box.

- `manifest`: a pairs manifest and its location table, checked against the contract;
- `store`: the image store (one Parquet file of JPEG bytes per dive), decoding and batches;
- `augment`: the augmentations, run on the device on whole batches;
- `positives`: GeoCLR's positives from the pairs table;
- `embeddings`: the embeddings file ``python -m ssl.embed`` writes and mapping reads.
"""
