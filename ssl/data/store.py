"""Image bytes, decoding and the batch stream that feeds the trainer.

The JPEG bytes (re-encoded to the training size by the pipeline) are read on demand from the
``images/<dive>.arrow`` files beside the manifests (:class:`ImageStore`): nothing is loaded up
front, the pages read live in the operating system's page cache, and every rank and decode
worker of a node shares that one copy. A rank's private memory holds only three small index
arrays (16 bytes per image) and the batches it is decoding. Every epoch draws
a fresh permutation of the indices and decodes batch by batch:

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

import os
import queue
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from ..contract import IMAGE_STORE, REBUILD
from .manifest import Manifest, ManifestError

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the functions still work.
_DEPRECATED = r"The image decoding and encoding capabilities of TorchVision"


def _open_store(path: Path) -> tuple[pa.Table, int]:
    """A dive's image file, memory-mapped (only to index it), and the address of the mapping's
    first byte: a buffer's address minus it is that buffer's offset in the file."""
    try:
        mapped = pa.memory_map(str(path), "r")
        base = mapped.read_buffer(1).address if mapped.size() else 0  # zero-copy: the mapping
        mapped.seek(0)
        table = pa.ipc.open_file(mapped).read_all()
    except (OSError, pa.ArrowException) as exc:  # truncated, damaged, not Arrow at all
        raise ManifestError(f"{path}: the image file is damaged and cannot be read ({exc}); "
                            f"{REBUILD}") from exc
    for f in IMAGE_STORE:
        got = table.schema.field(f.name).type if f.name in table.schema.names else None
        if got is None or not (got == f.type or (f.name == "jpeg" and pa.types.is_binary(got))):
            raise ManifestError(f"{path}: column {f.name!r} is {got} (expected {f.type}); "
                                f"{REBUILD}")
    return table, base


class ImageStore(Sequence):
    """The JPEG bytes of every location row, in ``idx`` order, read on demand.

    ``store[i]`` is the bytes of image ``idx == i`` (a slice gives a list), read with one
    ``os.pread`` from the dive's Arrow file. Nothing is mapped or loaded up front: the bytes
    come from the operating system's page cache, one copy per node that every rank and decode
    worker shares, and the process keeps only the index (file, offset, length: 16 bytes per
    image) and the images it is decoding. (Memory-mapping the files instead would put every
    page the kernel maps around a read into each process's resident, private memory: a random
    walk of 2.5 % of a file mapped 96 % of it.) Picklable: a worker reopens the files."""

    def __init__(self, paths: list[Path], file: np.ndarray, offset: np.ndarray,
                 length: np.ndarray):
        self.paths = [Path(p) for p in paths]
        self.file, self.offset, self.length = file, offset, length
        self._fds: list[int] | None = None
        self._pid = -1

    def _descriptors(self) -> list[int]:
        if self._fds is None or self._pid != os.getpid():
            self._fds = [os.open(p, os.O_RDONLY) for p in self.paths]
            self._pid = os.getpid()
            weakref.finalize(self, _close_all, self._fds)
        return self._fds

    @classmethod
    def open(cls, manifest: Manifest) -> ImageStore:
        """Index the image files of ``manifest`` (joined on image_id per dive); refuses a file
        that is damaged or lacks a located image."""
        n = manifest.n
        file = np.full(n, -1, dtype=np.int32)
        offset = np.zeros(n, dtype=np.int64)
        length = np.zeros(n, dtype=np.int32)
        paths = []
        for dive, path in manifest.stores.items():
            table, base = _open_store(path)
            k_file = len(paths)
            paths.append(path)
            rows = np.flatnonzero(manifest.dive == dive)
            if not rows.size:
                continue
            ids = table.column("image_id").combine_chunks()
            wanted = pa.array(manifest.image_id[rows].tolist(), type=pa.string())
            pos = pc.index_in(wanted, value_set=ids)
            valid = pos.is_valid().to_numpy(zero_copy_only=False)
            if not valid.all():
                absent = manifest.image_id[rows[~valid]].tolist()
                raise ManifestError(
                    f"{path}: {len(absent)} image(s) of dive {dive} listed in "
                    f"{manifest.locations_path.name} have no row in it (e.g. {absent[:3]}); "
                    f"expected every located image in the dive's image file; {REBUILD}")
            pos_np = pos.to_numpy(zero_copy_only=False).astype(np.int64)
            jpeg = table.column("jpeg")
            ends = np.cumsum([len(ch) for ch in jpeg.chunks], dtype=np.int64)
            chunk_of = np.searchsorted(ends, pos_np, side="right")  # row -> record batch
            within = pos_np - (ends - [len(ch) for ch in jpeg.chunks])[chunk_of]
            for k, ch in enumerate(jpeg.chunks):
                sel = chunk_of == k
                if not sel.any():
                    continue
                width = np.int64 if pa.types.is_large_binary(ch.type) else np.int32
                offs = np.frombuffer(ch.buffers()[1], dtype=width)[ch.offset:ch.offset
                                                                   + len(ch) + 1]
                data = ch.buffers()[2]
                at = (data.address - base) if data is not None else 0
                r = within[sel]
                offset[rows[sel]] = at + offs[r]
                length[rows[sel]] = offs[r + 1] - offs[r]
                file[rows[sel]] = k_file
        pa.default_memory_pool().release_unused()  # the id columns read above
        if (file < 0).any():
            missing = np.flatnonzero(file < 0)
            raise ManifestError(f"{manifest.locations_path}: {len(missing)} row(s) have no image "
                                f"file (e.g. {manifest.image_id[missing[:3]].tolist()}); "
                                f"{REBUILD}")
        return cls(paths, file, offset, length)

    def __len__(self) -> int:
        return len(self.offset)

    def read(self, i: int) -> bytes:
        """Image ``i``'s bytes, read from its file (from the page cache when cached)."""
        n = int(self.length[i])
        f = int(self.file[i])
        got = os.pread(self._descriptors()[f], n, int(self.offset[i]))
        if len(got) != n:  # the file was cut short after it was indexed
            raise ManifestError(f"{self.paths[f]}: the image file is shorter than when it was "
                                f"opened (image {i}); {REBUILD}")
        return got

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} out of range 0..{len(self) - 1}")
        return self.read(i % len(self))

    def tensor(self, i: int) -> torch.Tensor:
        """Image ``i``'s bytes as a 1-D uint8 CPU tensor (for the decoders)."""
        return torch.frombuffer(bytearray(self.read(i)), dtype=torch.uint8)

    def __reduce__(self):
        return (type(self), (self.paths, self.file, self.offset, self.length))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _byte_tensor(b: bytes | torch.Tensor) -> torch.Tensor:
    if isinstance(b, torch.Tensor):
        return b
    # bytearray: a writable copy, so torch does not warn about a read-only buffer
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def byte_tensors(images: Sequence, rows: Sequence[int]) -> list[torch.Tensor]:
    """The encoded bytes of ``images[rows]`` as 1-D uint8 CPU tensors (from an
    :class:`ImageStore` without an intermediate ``bytes`` copy)."""
    if isinstance(images, ImageStore):
        return [images.tensor(j) for j in rows]
    return [_byte_tensor(images[j]) for j in rows]


def decode_cpu(jpegs: Sequence[bytes] | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Decode on the CPU to uint8 RGB tensors (3, h, w); bytes or 1-D uint8 tensors."""
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
    data = [_byte_tensor(b) for b in jpegs]
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


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The epoch's permutation of ``range(n)`` (identical on every rank)."""
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


def rank_slices(order: np.ndarray, batch_size: int, rank: int, world_size: int,
                batches: int, skip: int = 0) -> list[np.ndarray]:
    """This rank's share of global batches ``skip..batches-1`` of ``order``: the contiguous
    slice ``[rank * batch_size, (rank + 1) * batch_size)`` of each global batch."""
    g, b = batch_size * world_size, batch_size
    out = []
    for k in range(int(skip), int(batches)):
        mine = order[k * g:(k + 1) * g][rank * b:(rank + 1) * b]
        if len(mine):
            out.append(mine.astype(np.int64))
    return out


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
        canvas, sizes = pad_batch(decode_cpu(byte_tensors(self.jpegs, rows.tolist())))
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
        return epoch_order(self.seed, epoch, self.n)

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
        return rank_slices(order, self.batch_size, self.rank, self.world_size,
                           self.num_batches(order), skip)

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
                    item = (idx, byte_tensors(self.jpegs, rows.tolist()))
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
