"""Packing named tensors into flat byte buckets and back: the wire format of the NCCL weight
broadcast. Pure torch (device-agnostic), so the CPU tests cover exactly what the GPU path runs.

The sender plans buckets from (name, dtype, shape) only, sends the plan once per sync (a few KB
of metadata), then one flat uint8 buffer per bucket; the receiver slices views out of its buffer
with the same plan. Mixed dtypes share a bucket; offsets are aligned so every view is legal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

ALIGN = 64  # bytes; any element size divides it, and it keeps each slice cache-line aligned


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # torch dtype name without "torch.", e.g. "bfloat16" (plain data for RPCs)
    shape: tuple[int, ...]
    offset: int  # byte offset inside the bucket
    nbytes: int


@dataclass(frozen=True)
class Bucket:
    entries: tuple[Entry, ...]
    nbytes: int  # buffer size, including alignment padding


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan_buckets(
    metas: Iterable[tuple[str, torch.dtype | str, tuple[int, ...]]], bucket_bytes: int
) -> list[Bucket]:
    """Greedy, order-preserving: a bucket closes before it would exceed bucket_bytes; a tensor
    bigger than a bucket travels alone."""
    if bucket_bytes < 1:
        raise ValueError("bucket_bytes must be >= 1")
    buckets: list[Bucket] = []
    entries: list[Entry] = []
    offset = 0
    for name, dtype, shape in metas:
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dt).element_size()
        start = -(-offset // ALIGN) * ALIGN
        if entries and start + nbytes > bucket_bytes:
            buckets.append(Bucket(tuple(entries), offset))
            entries, start = [], 0
        entries.append(Entry(name, dtype_name(dt), tuple(int(s) for s in shape), start, nbytes))
        offset = start + nbytes
    if entries:
        buckets.append(Bucket(tuple(entries), offset))
    return buckets


def pack_bucket(
    bucket: Bucket, tensors: dict[str, torch.Tensor], out: torch.Tensor | None = None
) -> torch.Tensor:
    """Copy the bucket's tensors into one uint8 buffer (`out` reused when given)."""
    device = next(iter(tensors.values())).device if tensors else "cpu"
    buf = (
        out[: bucket.nbytes]
        if out is not None
        else torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
    )
    for e in bucket.entries:
        t = tensors[e.name]
        if dtype_name(t.dtype) != e.dtype or tuple(t.shape) != e.shape:
            raise ValueError(
                f"{e.name}: planned {e.dtype}{list(e.shape)}, got {t.dtype}{list(t.shape)}"
            )
        buf[e.offset : e.offset + e.nbytes].copy_(t.contiguous().view(-1).view(torch.uint8))
    return buf


def unpack_bucket(buffer: torch.Tensor, bucket: Bucket) -> list[tuple[str, torch.Tensor]]:
    """Views (no copies) of the bucket's tensors inside `buffer`; consume before reusing it."""
    if buffer.dtype != torch.uint8 or buffer.numel() < bucket.nbytes:
        raise ValueError(f"need a uint8 buffer of >= {bucket.nbytes} bytes")
    return [
        (e.name, buffer[e.offset : e.offset + e.nbytes].view(getattr(torch, e.dtype)).view(e.shape))
        for e in bucket.entries
    ]


def to_wire(buckets: list[Bucket]) -> list[dict]:
    """Plain lists/dicts, safe for vLLM's collective_rpc (msgpack) and Ray."""
    return [
        {
            "nbytes": b.nbytes,
            "entries": [[e.name, e.dtype, list(e.shape), e.offset, e.nbytes] for e in b.entries],
        }
        for b in buckets
    ]


def from_wire(data: list[dict]) -> list[Bucket]:
    return [
        Bucket(
            tuple(Entry(n, d, tuple(s), o, nb) for n, d, s, o, nb in b["entries"]), int(b["nbytes"])
        )
        for b in data
    ]
