"""Image bytes, decoding and the batch stream that feeds the trainer.

All JPEG bytes of a survey are held in memory (they were re-encoded to the training size by the
pipeline, so a survey of a million images is tens of GB at most); every epoch draws a fresh
permutation of the indices and decodes batch by batch:

* on a CUDA device, whole batches are decoded on the GPU with nvJPEG
  (``torchvision.io.decode_jpeg(list, device=...)``) in the main process, while a background
  thread prepares the next batches' byte tensors;
* otherwise, ``workers`` CPU processes (a :class:`torch.utils.data.DataLoader` over whole
  batches) decode and pad, and the result is copied to the device (from pinned memory when the
  device is CUDA).

Batches are a pure function of ``(seed, epoch)``, so a run resumed at epoch ``e``, step ``s``
(``batches(e, skip=s)``) sees exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from .manifest import REBUILD, Manifest, ManifestError

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the functions still work.
_DEPRECATED = r"The image decoding and encoding capabilities of TorchVision"


def load_jpegs(manifest: Manifest) -> list[bytes]:
    """The JPEG bytes of every location row, in ``idx`` order (joined on image_id per dive)."""
    out: list[bytes | None] = [None] * manifest.n
    for dive, shard in manifest.shards.items():
        rows = np.flatnonzero(manifest.dive == dive)
        if not len(rows):
            continue
        table = pq.read_table(shard, columns=["image_id", "jpeg"])
        wanted = pa.array(manifest.image_id[rows].tolist(), type=pa.string())
        pos = pc.index_in(wanted, value_set=table.column("image_id").combine_chunks())
        pos_np = pos.to_numpy(zero_copy_only=False)
        valid = pos.is_valid().to_numpy(zero_copy_only=False)
        if not valid.all():
            absent = manifest.image_id[rows[~valid]].tolist()
            raise ManifestError(
                f"{shard}: {len(absent)} image(s) of dive {dive} listed in "
                f"{manifest.locations_path.name} have no row in the shard (e.g. {absent[:3]}); "
                f"expected every located image in images/{dive}.parquet; {REBUILD}")
        jpegs = table.column("jpeg").take(pa.array(pos_np.astype(np.int64))).to_pylist()
        for r, b in zip(rows.tolist(), jpegs, strict=True):
            out[r] = b
    missing = [i for i, b in enumerate(out) if b is None]
    if missing:
        raise ManifestError(f"{manifest.locations_path}: {len(missing)} row(s) have no image shard "
                            f"(e.g. {manifest.image_id[missing[:3]].tolist()}); {REBUILD}")
    return out  # type: ignore[return-value]


def _byte_tensor(b: bytes) -> torch.Tensor:
    # bytearray: a writable copy, so torch does not warn about a read-only buffer
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def decode_cpu(jpegs: Sequence[bytes]) -> list[torch.Tensor]:
    """Decode on the CPU to uint8 RGB tensors (3, h, w)."""
    if not len(jpegs):
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
        return list(decode_jpeg([_byte_tensor(b) for b in jpegs], mode=ImageReadMode.RGB))


def decode_gpu(jpegs: Sequence[bytes] | Sequence[torch.Tensor],
               device: torch.device | str) -> list[torch.Tensor]:
    """Batched nvJPEG decode to uint8 RGB tensors (3, h, w) on ``device`` (a CUDA device).

    Accepts bytes, or 1-D uint8 CPU tensors of the bytes (as the prefetch thread makes them).
    The current CUDA stream is synchronised first: nvJPEG writes its outputs from a private
    stream without waiting for work queued on the caller's stream, so a freshly recycled block
    of the caching allocator could otherwise be overwritten while queued kernels still read it
    (pytorch/vision#9606). :class:`BatchSource` decodes on its own side stream, so this wait
    covers only its own previous copies, not the training step.
    """
    if not len(jpegs):
        return []
    device = torch.device(device)
    data = [b if isinstance(b, torch.Tensor) else _byte_tensor(b) for b in jpegs]
    torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


def pad_batch(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images of slightly different sizes: top-left aligned on a zero canvas.

    Returns ``canvas`` uint8 (B, 3, Hmax, Wmax) and ``sizes`` int64 (B, 2) holding (h, w), both on
    the images' device.
    """
    if not len(images):
        raise ValueError("pad_batch: no images")
    dev = images[0].device
    hw = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    sizes = torch.tensor(hw, dtype=torch.int64).reshape(len(images), 2).to(dev)
    if len(set(hw)) == 1:  # the common case: one stack, no per-image copies
        return torch.stack(list(images)), sizes
    hmax, wmax = max(h for h, _ in hw), max(w for _, w in hw)
    canvas = torch.zeros((len(images), 3, hmax, wmax), dtype=torch.uint8, device=dev)
    for i, (im, (h, w)) in enumerate(zip(images, hw, strict=True)):
        canvas[i, :, :h, :w] = im
    return canvas, sizes


@dataclass
class Batch:
    """One step's data. ``canvas`` rows: the B anchors, then (with ``extra``) their B extras."""

    idx: torch.Tensor  # int64 (B,) on the CPU: image indices of the anchors
    canvas: torch.Tensor  # uint8 (B', 3, H, W) on the device, B' = B or 2B
    sizes: torch.Tensor  # int64 (B', 2) on the device: (h, w) of each image on the canvas
    wait_s: float  # seconds the consumer waited for this batch


class _BatchDataset(Dataset):
    """Item i = batch i decoded on the CPU and padded: (idx, canvas, sizes)."""

    def __init__(self, jpegs: Sequence[bytes], plan: list[np.ndarray], extra: np.ndarray | None):
        self.jpegs, self.plan, self.extra = jpegs, plan, extra

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        idx = self.plan[i]
        rows = idx if self.extra is None else np.concatenate([idx, self.extra[idx]])
        canvas, sizes = pad_batch(decode_cpu([self.jpegs[j] for j in rows.tolist()]))
        return torch.from_numpy(idx.astype(np.int64)), canvas, sizes


class BatchSource:
    """Epochs of decoded, padded image batches on ``device``.

    ``batches(epoch)`` walks a permutation of ``range(n)`` drawn from
    ``np.random.default_rng((seed, epoch))`` in global batches of ``batch_size * world_size``;
    rank ``r`` takes the contiguous slice ``[r * batch_size, (r + 1) * batch_size)`` of each, so
    ranks never share an image within an epoch. With ``drop_last=False`` the final short global
    batch is split the same way (a rank whose slice is empty yields nothing for it; use the
    default ``drop_last=True`` with DDP so that every rank takes the same number of steps).
    """

    def __init__(self, jpegs: Sequence[bytes], batch_size: int, *, device: torch.device | str = "cpu",
                 workers: int = 0, seed: int = 0, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1, prefetch: int = 2, gpu_decode: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.jpegs = jpegs
        self.n = len(jpegs)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.workers = int(workers)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.prefetch = max(1, int(prefetch))
        cuda = self.device.type == "cuda"
        self.gpu_decode = cuda if gpu_decode is None else bool(gpu_decode and cuda)

    # -- the index plan (pure numpy, no decoding) ------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of ``range(n)`` (identical on every rank)."""
        return np.random.default_rng((self.seed, int(epoch))).permutation(self.n)

    def num_batches(self, index_order: np.ndarray | None = None) -> int:
        """Global batches (= steps) per epoch, counting a final short one unless drop_last."""
        m = self.n if index_order is None else len(index_order)
        g = self.global_batch
        return m // g if self.drop_last else -(-m // g)

    def __len__(self) -> int:
        return self.num_batches()

    def plan(self, epoch: int, index_order: np.ndarray | None = None,
             skip: int = 0) -> list[np.ndarray]:
        """This rank's index arrays for the epoch's batches, after skipping ``skip`` of them.

        ``index_order``, when given, replaces the epoch's permutation and is used as is (e.g. a
        subset or an order from the caller's own sampler; shuffle it yourself).
        """
        order = self.order(epoch) if index_order is None else np.asarray(index_order, np.int64)
        if len(order) and (order.min() < 0 or order.max() >= self.n):
            raise ValueError(f"index_order has indices outside 0..{self.n - 1}")
        g, b = self.global_batch, self.batch_size
        out = []
        for k in range(int(skip), self.num_batches(order)):
            mine = order[k * g:(k + 1) * g][self.rank * b:(self.rank + 1) * b]
            if len(mine):
                out.append(mine.astype(np.int64))
        return out

    # -- decoding ---------------------------------------------------------------------------
    def batches(self, epoch: int, index_order: np.ndarray | None = None,
                extra: np.ndarray | None = None, skip: int = 0) -> Iterator[Batch]:
        """Yield this rank's batches of the epoch (see :meth:`plan`).

        ``extra`` (int, length n): each batch also decodes ``extra[idx]`` (e.g. each anchor's
        sampled positive), appended after the anchors on the canvas.
        """
        if extra is not None:
            extra = np.asarray(extra, dtype=np.int64)
            if extra.shape != (self.n,):
                raise ValueError(f"extra must have shape ({self.n},), got {extra.shape}")
            if self.n and (extra.min() < 0 or extra.max() >= self.n):
                raise ValueError(f"extra has indices outside 0..{self.n - 1}")
        plan = self.plan(epoch, index_order, skip)
        if not plan:
            return
        if self.gpu_decode:
            yield from self._gpu_batches(plan, extra)
        else:
            yield from self._cpu_batches(plan, extra)

    def _cpu_batches(self, plan: list[np.ndarray], extra: np.ndarray | None) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        kwargs = {}
        if self.workers > 0:
            kwargs["prefetch_factor"] = self.prefetch
            # fork shares the in-memory JPEG list with the workers instead of pickling it
            if sys.platform.startswith("linux"):
                kwargs["multiprocessing_context"] = "fork"
        loader = DataLoader(_BatchDataset(self.jpegs, plan, extra), batch_size=None,
                            shuffle=False, num_workers=self.workers, pin_memory=cuda, **kwargs)
        it = iter(loader)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    idx, canvas, sizes = next(it)
                except StopIteration:
                    return
                canvas = canvas.to(self.device, non_blocking=True)
                sizes = sizes.to(self.device, non_blocking=True)
                yield Batch(idx, canvas, sizes, time.perf_counter() - t0)
        finally:
            del it  # shuts the worker processes down when the consumer stops early

    def _gpu_batches(self, plan: list[np.ndarray], extra: np.ndarray | None) -> Iterator[Batch]:
        # A thread turns the bytes of the next batches into CPU byte tensors while the GPU
        # decodes and trains; nvJPEG decoding itself runs here, in the consumer's thread.
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for idx in plan:
                    rows = idx if extra is None else np.concatenate([idx, extra[idx]])
                    item = (idx, [_byte_tensor(self.jpegs[j]) for j in rows.tolist()])
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as exc:  # handed to the consumer, raised there
                q.put(exc)

        side = torch.cuda.Stream(self.device)
        worker = threading.Thread(target=produce, name="jpeg-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                idx, data = item
                # decode and pad on the side stream, then order the consumer's stream after it
                with torch.cuda.device(self.device), torch.cuda.stream(side):
                    canvas, sizes = pad_batch(decode_gpu(data, self.device))
                main = torch.cuda.current_stream(self.device)
                main.wait_stream(side)
                canvas.record_stream(main)  # not recycled on the side stream while main uses it
                sizes.record_stream(main)
                yield Batch(torch.from_numpy(idx), canvas, sizes, time.perf_counter() - t0)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)
