"""Writing PIPS paths as trajectories: DCD (all paths one after another) + a PDB topology, via mdtraj."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_paths(path_positions_nm: torch.Tensor, topology, out_dcd: Path) -> Path:
    """Write paths (n_paths, n_frames, n_atoms, 3) nm as one DCD, path after path, and the topology
    (first frame) as a PDB beside it (same name, ``.pdb``). ``topology`` is an OpenMM Topology.
    Returns the PDB path."""
    import mdtraj

    out_dcd = Path(out_dcd)
    out_dcd.parent.mkdir(parents=True, exist_ok=True)
    frames = path_positions_nm.reshape(-1, *path_positions_nm.shape[-2:]).numpy().astype(np.float32)
    trajectory = mdtraj.Trajectory(frames, mdtraj.Topology.from_openmm(topology))
    trajectory.save_dcd(str(out_dcd))
    pdb = out_dcd.with_suffix(".pdb")
    trajectory[0].save_pdb(str(pdb))
    return pdb
