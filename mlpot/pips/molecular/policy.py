"""Control policies for molecules: invariant inputs, equivariant control forces.

Positions and velocities are (n, n_atoms, 3) in the rollout's units, OpenMM's: nm and nm/ps
(:mod:`mlpot.pips.molecular.rollout`); the time input (n,) is t / T ∈ [0, 1], and the output is a
force (n, n_atoms, 3) in kJ/mol/nm. ``length_scale`` (nm) and ``force_scale`` (kJ/mol/nm) set
what one unit of the network's input and output means (the trainer's defaults: 1 Å and
100 kJ/mol/nm). A policy must not care where the molecule is or how it is oriented, otherwise
it pushes the molecule as a whole and learns the same thing once per orientation (the reference
code feeds raw Cartesian coordinates and its released policy exerts a net force of
~170 kJ/mol/nm). Two ways, as in the PIPS paper's two policy kinds:

- :class:`DistanceEnergyPolicy`: a scalar E_θ of the inverse pairwise distances
  and t/T, u = −∂E_θ/∂x. E_θ is exactly invariant under rotation, translation and reflection,
  so u is exactly equivariant and, being the gradient of an invariant, has **zero net force and
  zero net torque** by construction; the terminal cost compares the same pairwise distances.
  Inverse distances weight close contacts most and stay bounded for distant pairs. Cost: n(n−1)/2
  inputs (231 for alanine dipeptide; ``atoms`` restricts it, e.g. to heavy atoms for chignolin)
  and second derivatives in the loss. It ignores velocities.
- :class:`AlignedForcePolicy`: superposes the positions on a reference structure (Kabsch), feeds
  the aligned coordinates (and aligned velocities) to an MLP that outputs forces in the reference
  frame, removes their mean (no net force) and rotates them back. Equivariant as long as the
  superposition is unique (it is not for near-linear or wildly distorted structures, where the
  rotation jumps), cheaper (3n inputs, no second derivatives: 2.5× faster per training iteration
  on alanine dipeptide), and it can use velocities. It is the default of
  :class:`~mlpot.pips.molecular.trainer.MolecularTrainConfig` (``policy: aligned-force``).

Either can be wrapped by :class:`TargetGuidedPolicy`, which adds a pull down the gradient of the
terminal cost (the aligned RMSD to the target) with a learned, time-dependent strength. Started
from zero control, PICE on alanine dipeptide never sees a path near the target (16 paths × 0.5 ps
at 300 K, friction 1/ps: the importance weights stay on one path, ESS 1.0/16, THP 0 after 400
iterations), because the uncontrolled dynamics practically never gets there (16 replicas × 1 ns of
unbiased MD from the start: no crossing). Starting from a pull that already gets there (what
steered MD does) turns the search into a refinement: the weights then compare paths that hit with
more or less control work, and PICE lowers the work (and the energy crossed) while keeping the
hits. The pull uses only the target structure, which the terminal cost uses anyway, so no
collective variable is introduced.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from mlpot.pips.geometry import aligned_squared_deviation_gradient, centred, kabsch_rotation, pairwise_distances
from mlpot.pips.gradients import negative_gradient
from mlpot.pips.policy import PolicyInputs, mlp, splits_inputs

SOFTPLUS_OF_ZERO = float(nn.functional.softplus(torch.zeros((), dtype=torch.float64)))  # ln 2: κ's unit


def in_network_precision(network: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``network(features)`` computed in the dtype of the network's weights, returned in the features' dtype.

    A policy's geometry (superposition, rotation, the pull) and everything the path weights use stay in the
    positions' float64; only the MLP may run in float32 (``network_dtype``, :func:`with_network_dtype`), where its
    weights take half the memory and its matrix products half the time."""
    network_dtype = next(network.parameters()).dtype
    return network(features.to(network_dtype)).to(features.dtype)


def with_network_dtype(policy: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``policy`` (in place) with the MLP of its invariant or aligned part in ``dtype``: that of a
    :class:`DistanceEnergyPolicy` or :class:`AlignedForcePolicy`, also as a :class:`TargetGuidedPolicy`'s
    residual (whose pull strengths stay as they are)."""
    inner = policy.residual if isinstance(policy, TargetGuidedPolicy) else policy
    inner.network.to(dtype)
    return policy


class DistanceEnergyPolicy(nn.Module):
    """u = −∂E_θ/∂x, E_θ = MLP(length_scale / |r_i − r_j| for atom pairs of ``atoms``, t/T) · force_scale."""

    def __init__(self, n_atoms: int, hidden: Sequence[int] = (128, 128), atoms: Optional[Sequence[int]] = None,
                 length_scale: float = 1.0, force_scale: float = 1.0):
        super().__init__()
        selected = list(range(n_atoms)) if atoms is None else list(atoms)
        if len(selected) < 2 or min(selected) < 0 or max(selected) >= n_atoms:
            raise ValueError(f"atoms must name at least two of the {n_atoms} atoms, got {atoms}")
        self.register_buffer("atoms", torch.tensor(selected, dtype=torch.long))
        self.length_scale = length_scale
        self.force_scale = force_scale
        n_pairs = len(selected) * (len(selected) - 1) // 2
        self.network = mlp([n_pairs + 1, *hidden, 1])

    def energy(self, positions: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        """E_θ (n,) in force unit × length unit."""
        inverse = self.length_scale / pairwise_distances(positions[:, self.atoms])
        features = torch.cat([inverse, time_fraction[:, None].to(positions.dtype)], dim=1)
        return self.force_scale * self.length_scale * in_network_precision(self.network, features)[:, 0]

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        return negative_gradient(lambda x: self.energy(x, time_fraction), positions)


class AlignedForcePolicy(nn.Module):
    """u = MLP(x aligned on ``reference``, [v aligned,] t/T) · force_scale, mean removed, rotated back."""

    def __init__(self, reference: torch.Tensor, hidden: Sequence[int] = (128, 128), use_velocities: bool = True,
                 length_scale: float = 1.0, velocity_scale: float = 1.0, force_scale: float = 1.0):
        super().__init__()
        self.register_buffer("reference", centred(torch.as_tensor(reference, dtype=torch.float64)))
        self.use_velocities = use_velocities
        self.length_scale, self.velocity_scale, self.force_scale = length_scale, velocity_scale, force_scale
        n_coordinates = self.reference.numel()
        self.network = mlp([n_coordinates * (2 if use_velocities else 1) + 1, *hidden, n_coordinates])

    def splits_inputs(self) -> bool:
        return True

    def invariant_inputs(self, positions: torch.Tensor, velocities: torch.Tensor,
                         time_fraction: torch.Tensor) -> PolicyInputs:
        """The network's input (aligned positions and velocities, t/T; in the network's dtype) and the rotation
        (n, 3, 3) onto the reference: what the control is computed from, independent of the weights."""
        mobile = centred(positions)
        rotation = kabsch_rotation(mobile.detach(), self.reference.to(positions.dtype))  # (n, 3, 3)
        parts = [(mobile @ rotation).flatten(start_dim=1) / self.length_scale]
        if self.use_velocities:
            parts.append((velocities @ rotation).flatten(start_dim=1) / self.velocity_scale)
        parts.append(time_fraction[:, None].to(positions.dtype))
        network_dtype = next(self.network.parameters()).dtype
        return {"network_input": torch.cat(parts, dim=1).to(network_dtype), "rotation": rotation}

    def controls_from_inputs(self, inputs: PolicyInputs) -> torch.Tensor:
        """u (n, n_atoms, 3) from :meth:`invariant_inputs`, with a graph to the weights."""
        rotation = inputs["rotation"]
        output = self.network(inputs["network_input"]).to(rotation.dtype)  # as in_network_precision
        force = self.force_scale * output.reshape(len(rotation), -1, 3)
        force = force - force.mean(dim=1, keepdim=True)  # no net force
        return force @ rotation.transpose(-1, -2)  # back from the reference frame (rotation is orthogonal)

    def controls_dot(self, inputs: PolicyInputs, directions: torch.Tensor) -> torch.Tensor:
        """u · d per state (n,) for directions d (n, n_atoms, 3) without a graph, with a graph to the weights; u is
        not formed: with F the network's forces in the reference frame, u = (F − F̄) Rᵀ, so u · d = Σ_a F_a · (e_a − ē)
        with e = d R (:func:`mlpot.pips.loss.policy_work`). The products are in the network's dtype."""
        rotation = inputs["rotation"]
        output = self.network(inputs["network_input"])  # (n, n_atoms × 3)
        with torch.no_grad():
            in_frame = directions @ rotation
            in_frame = (in_frame - in_frame.mean(dim=1, keepdim=True)).flatten(start_dim=1).to(output.dtype)
        return self.force_scale * (output * in_frame).sum(dim=1).to(rotation.dtype)

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        return self.controls_from_inputs(self.invariant_inputs(positions, velocities, time_fraction))


class TargetGuidedPolicy(nn.Module):
    """u = κ(t) · (−∂RMSD²_atoms/∂x) + residual(x, v, t): a pull toward ``target`` over ``atoms``
    (Kabsch-aligned RMSD, so no net force or torque) plus a learned correction.

    κ(t) = ``strength`` · softplus(a(t)) / softplus(0), with a(t) interpolated linearly between
    ``n_knots`` learned values at evenly spaced t/T ∈ [0, 1], all 0 at the start (κ = ``strength``,
    in force per length², e.g. kJ/mol/nm²). The residual policy (``DistanceEnergyPolicy`` or
    ``AlignedForcePolicy``) starts at zero output, so the untrained policy is steered MD.

    The knots learn ``knot_lr_scale`` times faster than the residual network's weights
    (:meth:`parameter_groups`): Adam moves every parameter by about the learning rate per step,
    which is right for network weights but would take thousands of iterations to change κ by a
    factor e."""

    knot_lr_scale = 30.0

    def __init__(self, target: torch.Tensor, atoms: Sequence[int], residual: nn.Module, strength: float,
                 n_knots: int = 11):
        super().__init__()
        if strength <= 0 or n_knots < 2:
            raise ValueError(f"strength must be positive and n_knots at least 2, got {strength}, {n_knots}")
        self.register_buffer("target", torch.as_tensor(target, dtype=torch.float64).clone())
        self.register_buffer("atoms", torch.tensor(list(atoms), dtype=torch.long))
        self.strength = strength
        self.log_strength_knots = nn.Parameter(torch.zeros(n_knots, dtype=torch.float64))
        self.residual = residual

    def parameter_groups(self) -> list[dict]:
        """Adam groups with learning-rate multiples (see :func:`mlpot.pips.trainer.parameter_groups`)."""
        return [{"params": [self.log_strength_knots], "lr_scale": self.knot_lr_scale},
                {"params": list(self.residual.parameters()), "lr_scale": 1.0}]

    def pull_strength(self, time_fraction: torch.Tensor) -> torch.Tensor:
        """κ(t/T) (n,) in the unit of ``strength``."""
        knots = self.log_strength_knots
        position = time_fraction.clamp(0.0, 1.0) * (len(knots) - 1)
        lower = position.floor().long().clamp(max=len(knots) - 2)
        fraction = (position - lower).to(knots.dtype)
        value = knots[lower] * (1.0 - fraction) + knots[lower + 1] * fraction
        return self.strength * nn.functional.softplus(value) / SOFTPLUS_OF_ZERO

    def splits_inputs(self) -> bool:
        return splits_inputs(self.residual)

    def invariant_inputs(self, positions: torch.Tensor, velocities: torch.Tensor,
                         time_fraction: torch.Tensor) -> PolicyInputs:
        """The residual's inputs, the pull's direction ∂RMSD²_atoms/∂x (n, n_pull_atoms, 3) and t/T (n,)
        (only for a residual that :func:`~mlpot.pips.policy.splits_inputs`)."""
        inputs = self.residual.invariant_inputs(positions, velocities, time_fraction)
        inputs["pull_gradient"] = self._pull_gradient(positions)
        inputs["time_fraction"] = time_fraction
        return inputs

    def controls_from_inputs(self, inputs: PolicyInputs) -> torch.Tensor:
        """u from :meth:`invariant_inputs`, with a graph to the pull strengths and the residual's weights."""
        return self._add_pull(self.residual.controls_from_inputs(inputs), inputs["pull_gradient"],
                              inputs["time_fraction"])

    def controls_dot(self, inputs: PolicyInputs, directions: torch.Tensor) -> torch.Tensor:
        """u · d per state (n,) (:meth:`AlignedForcePolicy.controls_dot`): the residual's, minus κ(t) times the pull
        direction's."""
        gradient = inputs["pull_gradient"]
        with torch.no_grad():
            pull_dot = (gradient * directions.index_select(-2, self.atoms)).flatten(start_dim=1).sum(dim=1)
        strength = self.pull_strength(inputs["time_fraction"]).to(gradient.dtype)
        return self.residual.controls_dot(inputs, directions) - strength * pull_dot

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        return self._add_pull(self.residual(positions, velocities, time_fraction), self._pull_gradient(positions),
                              time_fraction)

    def _pull_gradient(self, positions: torch.Tensor) -> torch.Tensor:
        """∂RMSD²_atoms/∂x on ``atoms`` only (n, n_pull_atoms, 3)."""
        return aligned_squared_deviation_gradient(positions.detach().index_select(-2, self.atoms),
                                                  self.target.to(positions.dtype).index_select(-2, self.atoms))

    def _add_pull(self, residual: torch.Tensor, gradient: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        """The residual's control plus the pull, which acts on ``atoms`` only (added to their rows)."""
        strength = self.pull_strength(time_fraction).to(gradient.dtype)
        return residual.index_add(-2, self.atoms, -strength[:, None, None] * gradient)
