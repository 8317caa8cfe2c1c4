"""Edges in cache-sized chunks, for the per-edge part of a message-passing layer on a CPU.

A layer's per-edge tensors are ``(n_edges, width)``: with ~50 neighbours per atom within 5 Å and a width
of 128, one such tensor is 1.6 MB per 64 atoms. Past a few hundred atoms they no longer fit in the
caches, and every elementwise step of the forward and backward passes streams them through main memory,
so the time per atom grows with the system. Computing the messages of a chunk of edges at a time and
summing them onto the atoms chunk by chunk does the same arithmetic (the sums differ only in float
summation order) with a working set that stays in cache.

It is off by default, because the loop costs time on small systems: in TorchScript's compiled graph
the layer is no longer one straight block. Measured per energy + forces call (1 thread, model files
loaded side by side in one process, EGNN ``hidden`` 128 with 4096 edges per chunk): water-1536 (~80 000
edges) 2.09 s → 1.06 s, water-192 127 → 139 ms, alanine dipeptide 8.4 → 9.3 ms. At ``hidden`` 64 (8192 per
chunk) water-1536 did not gain (428 → 437 ms). A good chunk holds about 2^19 floats per per-edge tensor
(2 MiB in float32): ``2**19 // hidden`` edges. The NequIP-style model does not chunk: its per-edge work
is split into narrow per-path blocks and gained 3 % at water-1536.

GPUs want the opposite (few large kernels), so on any device other than the CPU there is one chunk.
"""

from typing import List, Tuple

import torch


def edge_chunks(num_edges: int, chunk_size: int, device: torch.device) -> List[Tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(num_edges)``: one span when ``chunk_size <= 0``, when the
    edges fit in one chunk, or off the CPU; else spans of ``chunk_size`` (the last one shorter)."""
    if chunk_size <= 0 or num_edges <= chunk_size or device.type != "cpu":
        return [(0, num_edges)]
    spans: List[Tuple[int, int]] = []
    for start in range(0, num_edges, chunk_size):
        spans.append((start, min(start + chunk_size, num_edges)))
    return spans
