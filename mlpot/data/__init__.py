"""Reference data: reading, validation, statistics, splits and training graphs.

Flow: ``read_frames`` (file → :class:`Frame` in Å/eV) → ``validate_frames`` (named errors) →
``compute_statistics`` (reference energies, force RMS, neighbour count) and ``random_split`` →
``frames_to_graphs`` / ``collate`` (batched graphs for :mod:`mlpot.train`).
"""

from mlpot.data.frames import DataError, Frame
from mlpot.data.graphs import Batch, Graph, collate, frames_to_graphs
from mlpot.data.readers import DataSpec, read_frames, read_many
from mlpot.data.split import check_split, load_split, random_split, read_index_file, save_split
from mlpot.data.statistics import DatasetStatistics, compute_statistics
from mlpot.data.validate import validate_frames

__all__ = [
    "Batch", "DataError", "DataSpec", "DatasetStatistics", "Frame", "Graph", "check_split", "collate",
    "compute_statistics", "frames_to_graphs", "load_split", "random_split", "read_frames", "read_index_file",
    "read_many", "save_split", "validate_frames",
]
