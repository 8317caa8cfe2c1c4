"""StABlE foundations: the Boltzmann estimator against exact answers, instability detection, the batched
replica simulator (energy conservation, thermostats), its forces against the deployed model, observables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import ARCHITECTURES, as_tensors
from mlpot.data.readers import read_frames
from mlpot.deploy import load_model
from mlpot.md import LangevinBAOAB, NoseHooverChain, ReplicaPotential, ReplicaSimulator, VelocityVerlet
from mlpot.md.observables import (
    DistanceBins,
    bond_lengths,
    covalent_bonds,
    distance_histogram,
    histogram_mae,
    radial_distribution,
    velocity_autocorrelation,
)
from mlpot.md.reference import frame_positions, molecule_reference
from mlpot.md.stability import (
    EVALUATION_BOND_THRESHOLD_A,
    TRAINING_BOND_THRESHOLD_A,
    BondLengthCriterion,
    MinimumDistanceCriterion,
    run_checked_segment,
)
from mlpot.md.state import kinetic_energies
from mlpot.stable.estimator import (
    backward_boltzmann_gradient,
    boltzmann_surrogate,
    loss_weights,
    observable_loss_surrogate,
    squared_error_loss,
)
from mlpot.systems import SYSTEMS_DIR
from mlpot.units import BOLTZMANN_EV_PER_K

torch.set_num_threads(1)

ETHANOL_DFT = SYSTEMS_DIR / "ethanol" / "dft.extxyz"


@pytest.fixture(scope="module")
def ethanol_frames():
    return read_frames(ETHANOL_DFT)


@pytest.fixture(scope="module")
def ethanol_reference(ethanol_frames):
    return molecule_reference(ethanol_frames)


@pytest.fixture(scope="module")
def ethanol_positions(ethanol_frames):
    return frame_positions(ethanol_frames)  # (positions (F, 9, 3) Å, numbers (9,))


# ---------------------------------------------------------------- Boltzmann estimator


def test_estimator_gives_exact_harmonic_derivative_of_mean_square_displacement():
    """U = k x²/2, O = x²: d⟨x²⟩/dk = −kT/k², from exact Boltzmann samples x ~ N(0, kT/k)."""
    temperature_K = 300.0
    kT = BOLTZMANN_EV_PER_K * temperature_K
    stiffness = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))  # eV/Å²
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=generator, dtype=torch.float64) * math.sqrt(kT / stiffness.item())
    energies = 0.5 * stiffness * x**2
    surrogate, mean_square = observable_loss_surrogate(energies, x**2, lambda mean: mean, temperature_K)
    surrogate.backward()
    exact = -kT / stiffness.item() ** 2
    relative_error = abs(float(stiffness.grad) - exact) / abs(exact)
    print(f"harmonic: estimator {float(stiffness.grad):.6e}, exact {exact:.6e}, relative error {relative_error:.4f}")
    assert relative_error < 0.05
    assert float(mean_square) == pytest.approx(kT / stiffness.item(), rel=0.02)


def _morse_energy(r: torch.Tensor, depth: torch.Tensor, width: torch.Tensor, r0: float = 1.0) -> torch.Tensor:
    return depth * (1.0 - torch.exp(-width * (r - r0))) ** 2


MORSE_GRID = torch.linspace(0.4, 3.0, 40_001, dtype=torch.float64)  # Å; the density is ~0 at both ends


def _morse_averages(depth: float, width: float, kT: float) -> torch.Tensor:
    """(⟨r⟩, ⟨r²⟩) by quadrature on MORSE_GRID."""
    r = MORSE_GRID
    density = torch.exp(-_morse_energy(r, torch.tensor(depth, dtype=torch.float64),
                                       torch.tensor(width, dtype=torch.float64)) / kT)
    normaliser = torch.trapezoid(density, r)
    return torch.stack([torch.trapezoid(density * r, r), torch.trapezoid(density * r**2, r)]) / normaliser


def test_estimator_matches_finite_differences_of_quadrature_for_two_parameter_morse():
    temperature_K = 1000.0
    kT = BOLTZMANN_EV_PER_K * temperature_K
    depth, width = 0.5, 2.0  # eV, 1/Å
    target = torch.tensor([1.05, 1.20], dtype=torch.float64)
    loss = squared_error_loss(target)

    def loss_at(d: float, w: float) -> float:
        return float(loss(_morse_averages(d, w, kT)))

    step = 1e-5
    finite_difference = torch.tensor([
        (loss_at(depth + step, width) - loss_at(depth - step, width)) / (2 * step),
        (loss_at(depth, width + step) - loss_at(depth, width - step)) / (2 * step),
    ], dtype=torch.float64)
    # exact Boltzmann samples by inverting the quadrature CDF
    r = MORSE_GRID
    density = torch.exp(-_morse_energy(r, torch.tensor(depth, dtype=torch.float64),
                                       torch.tensor(width, dtype=torch.float64)) / kT)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64),
                     torch.cumsum(0.5 * (density[1:] + density[:-1]) * (r[1] - r[0]), 0)])
    uniform = np.random.default_rng(1).uniform(0.0, float(cdf[-1]), 400_000)
    samples = torch.from_numpy(np.interp(uniform, cdf.numpy(), r.numpy()))

    parameters = torch.nn.Parameter(torch.tensor([depth, width], dtype=torch.float64))
    energies = _morse_energy(samples, parameters[0], parameters[1])
    surrogate, _ = observable_loss_surrogate(energies, torch.stack([samples, samples**2], dim=1), loss, temperature_K)
    surrogate.backward()
    estimate = parameters.grad
    relative_error = float(torch.linalg.norm(estimate - finite_difference) / torch.linalg.norm(finite_difference))
    print(f"Morse: estimator {estimate.tolist()}, finite differences {finite_difference.tolist()}, "
          f"relative error {relative_error:.4f}")
    assert relative_error < 0.05
    assert torch.allclose(estimate, finite_difference, rtol=0.05)


def test_one_backward_pass_equals_per_sample_covariance_for_a_model(eager_models, ethanol_positions):
    """The surrogate's gradient is −β Cov(w, ∂U/∂θ) computed sample by sample, for a real model."""
    model = eager_models[("egnn", "float64")]
    positions, numbers = ethanol_positions
    samples = positions[::100]  # 11 frames
    potential = ReplicaPotential(model, numbers)
    weights = torch.linspace(-1.0, 2.0, samples.shape[0], dtype=torch.float64) ** 2
    temperature_K = 500.0
    parameters = [p for p in model.parameters() if p.requires_grad]

    model.zero_grad()
    boltzmann_surrogate(potential.energies(samples), weights, temperature_K).backward()
    one_pass = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in parameters])

    per_sample = []
    for frame in samples:
        gradients = torch.autograd.grad(potential.energies(frame[None]).sum(), parameters, materialize_grads=True)
        per_sample.append(torch.cat([g.reshape(-1) for g in gradients]))
    per_sample = torch.stack(per_sample)
    centred_weights = weights - weights.mean()
    covariance = (centred_weights[:, None] * (per_sample - per_sample.mean(0))).sum(0) / (len(weights) - 1)
    expected = (-covariance / (BOLTZMANN_EV_PER_K * temperature_K)).detach()
    assert torch.allclose(one_pass, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))

    model.zero_grad()  # the same, backpropagated 4 samples at a time (bounded memory)
    backward_boltzmann_gradient(potential.energies, samples, weights, temperature_K, chunk_size=4)
    chunked = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in parameters])
    model.zero_grad()
    assert torch.allclose(chunked, one_pass, rtol=1e-9, atol=1e-12 * float(one_pass.abs().max()))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: loss_weights(torch.ones(1, 3), lambda m: m.sum()), "at least 2 samples"),
        (lambda: loss_weights(torch.tensor([1.0, float("nan")]), lambda m: m), "NaN"),
        (lambda: loss_weights(torch.ones(4, 3), lambda m: m), "scalar"),
        (lambda: boltzmann_surrogate(torch.ones(4), torch.ones(3), 300.0), "shape"),
        (lambda: boltzmann_surrogate(torch.ones(4), torch.ones(4), 0.0), "temperature"),
        (lambda: squared_error_loss(torch.ones(2))(torch.ones(3)), "target"),
        (lambda: backward_boltzmann_gradient(lambda x: x, torch.ones(4), torch.ones(3), 300.0),
         "one weight per sample"),
        (lambda: backward_boltzmann_gradient(lambda x: x, torch.ones(4), torch.ones(4), 300.0, chunk_size=0),
         "chunk_size"),
    ],
)
def test_estimator_rejects_bad_input_with_a_named_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_maxwell_boltzmann_velocities_have_the_temperature_no_drift_and_heavier_atoms_slower():
    """The one velocity sampler (mlpot.md.state): each replica's kinetic energy is (3N − 3)/2 kT exactly, the
    centre of mass is at rest, and ⟨v²⟩ per atom goes as 1/m − 1/M (M the total mass: the drift removed)."""
    from mlpot.md.state import masses_of, maxwell_boltzmann_velocities

    masses = masses_of([6, 6, 8, 1, 1, 1, 1, 1, 1])  # ethanol
    velocities = maxwell_boltzmann_velocities(masses, 4000, 300.0, torch.Generator().manual_seed(0))
    assert velocities.shape == (4000, 9, 3)
    degrees_of_freedom = 3 * 9 - 3
    temperatures = 2 * kinetic_energies(velocities, masses) / (degrees_of_freedom * BOLTZMANN_EV_PER_K)
    assert torch.allclose(temperatures, torch.full_like(temperatures, 300.0), rtol=1e-10)
    momentum = (masses[None, :, None] * velocities).sum(dim=1)
    assert float(momentum.abs().max()) < 1e-10
    mean_square = (velocities**2).mean(dim=(0, 2))  # per atom
    expected = (1 / masses[3] - 1 / masses.sum()) / (1 / masses[0] - 1 / masses.sum())  # hydrogen / carbon
    assert float(mean_square[3] / mean_square[0]) == pytest.approx(float(expected), rel=0.05)
    assert not maxwell_boltzmann_velocities(masses, 2, 0.0).any()


# ---------------------------------------------------------------- instability detection


def test_ethanol_reference_has_its_eight_covalent_bonds(ethanol_reference):
    numbers = ethanol_reference.atomic_numbers
    pairs = sorted("".join(sorted("HCO"[[1, 6, 8].index(int(numbers[i]))] for i in bond))
                   for bond in ethanol_reference.bonds.tolist())
    assert pairs == ["CC", "CH", "CH", "CH", "CH", "CH", "CO", "HO"]
    assert torch.all((ethanol_reference.bond_lengths_A > 0.9) & (ethanol_reference.bond_lengths_A < 1.6))


def _stretch_bond(positions: torch.Tensor, bond, factor: float) -> torch.Tensor:
    """Move atom bond[1] along the bond so that the bond is ``factor`` times as long."""
    i, j = bond
    stretched = positions.clone()
    stretched[..., j, :] = positions[..., i, :] + factor * (positions[..., j, :] - positions[..., i, :])
    return stretched


def test_bond_criterion_flags_a_doubled_ch_bond_but_no_thermal_dft_fluctuation(
    ethanol_frames, ethanol_reference, ethanol_positions
):
    positions, numbers = ethanol_positions
    bonds = ethanol_reference.bonds
    ch_bond = next(b for b in bonds.tolist() if sorted(int(numbers[k]) for k in b) == [1, 6])
    training = BondLengthCriterion(bonds, ethanol_reference.bond_lengths_A, TRAINING_BOND_THRESHOLD_A)
    evaluation = BondLengthCriterion(bonds, ethanol_reference.bond_lengths_A, EVALUATION_BOND_THRESHOLD_A)

    # every DFT frame (GFN2-xTB dynamics at 300-600 K) as one replica with one frame
    thermal = positions[None]  # (1, F, 9, 3): F replicas
    deviation = evaluation.max_deviation_A(thermal)
    temperatures = torch.tensor([frame.info["temperature_K"] for frame in ethanol_frames])
    print(f"DFT frames: max bond deviation {float(deviation.max()):.3f} Å overall, "
          f"{float(deviation[temperatures == 300].max()):.3f} Å at 300 K; "
          f"above 0.25 Å: {int((deviation > 0.25).sum())} of {len(deviation)}")
    assert not evaluation.unstable(thermal).any()
    assert not training.unstable(thermal[:, temperatures == 300]).any()
    assert float(deviation.max()) < 0.3

    stretched = _stretch_bond(positions[:5], ch_bond, 2.0)[None]  # 5 replicas, each with one stretched C-H
    assert training.unstable(stretched).all() and evaluation.unstable(stretched).all()
    # one stretched frame in the middle of an otherwise thermal segment flags that replica only
    segment = positions[:6].reshape(3, 2, 9, 3).clone()
    segment[1, 0] = _stretch_bond(segment[1, 0], ch_bond, 2.0)
    assert evaluation.unstable(segment).tolist() == [True, False]


def test_molecule_criterion_flags_merged_hydrogens_that_no_bond_criterion_sees(ethanol_reference, ethanol_positions):
    """Under-trained models can merge two methyl hydrogens while every C-H bond keeps its length."""
    from mlpot.md.stability import molecule_criterion

    positions, numbers = ethanol_positions
    bonds, lengths = ethanol_reference.bonds, ethanol_reference.bond_lengths_A
    carbon = next(c for c in range(9) if int(numbers[c]) == 6 and
                  sum(int(numbers[j]) == 1 for b in bonds.tolist() if c in b for j in b if j != c) == 3)
    first, second = [j for b in bonds.tolist() if carbon in b for j in b if j != carbon and int(numbers[j]) == 1][:2]
    merged = positions[:4].clone()
    for frame in merged:  # rotate the second H onto the first, around the carbon: same C-H length
        frame[second] = frame[carbon] + (frame[first] - frame[carbon]) * (
            torch.linalg.norm(frame[second] - frame[carbon]) / torch.linalg.norm(frame[first] - frame[carbon]))
    criterion = molecule_criterion(9, bonds, lengths, EVALUATION_BOND_THRESHOLD_A)
    assert not BondLengthCriterion(bonds, lengths, EVALUATION_BOND_THRESHOLD_A).unstable(merged[None]).any()
    assert criterion.unstable(merged[None]).all()
    assert not criterion.unstable(positions[None]).any()  # no DFT frame has two atoms within 0.7 Å
    assert molecule_criterion(9, bonds, lengths, 0.5, contact_A=None).unstable(merged[None]).sum() == 0


def test_non_finite_replica_counts_as_unstable_and_leaves_the_others_running(eager_models, ethanol_positions,
                                                                            ethanol_reference):
    positions, numbers = ethanol_positions
    potential = ReplicaPotential(eager_models[("egnn", "float64")], numbers)
    start = positions[:3].clone()
    start[1, 4] = float("nan")
    energies, forces = potential.energies_and_forces(start)
    reference_energies, reference_forces = potential.energies_and_forces(positions[[0, 2]])
    assert torch.allclose(energies[[0, 2]], reference_energies) and torch.allclose(forces[[0, 2]], reference_forces)
    assert torch.all(forces[1] == 0)
    criterion = BondLengthCriterion(ethanol_reference.bonds, ethanol_reference.bond_lengths_A)
    assert criterion.unstable(start[None]).tolist() == [False, True, False]


def test_unstable_replicas_go_back_to_their_last_stable_state_and_stable_ones_continue(
    eager_models, ethanol_positions, ethanol_reference
):
    positions, numbers = ethanol_positions
    potential = ReplicaPotential(eager_models[("egnn", "float64")], numbers)
    simulator = ReplicaSimulator.from_positions(potential, positions[:4], NoseHooverChain(0.5, 300.0), 300.0, seed=3)
    start = simulator.state.clone()

    class FlagReplicas:  # a criterion that declares replicas 1 and 3 unstable
        def unstable(self, frames):
            return torch.tensor([False, True, False, True])

    _, unstable = run_checked_segment(simulator, n_steps=5, record_every=5, criterion=FlagReplicas())
    assert unstable.tolist() == [False, True, False, True]
    state = simulator.state
    for replica in (1, 3):
        assert torch.equal(state.positions[replica], start.positions[replica])
        assert torch.equal(state.velocities[replica], start.velocities[replica])
        assert torch.equal(state.forces[replica], start.forces[replica])
        assert torch.equal(state.thermostat["chain_velocities"][replica], start.thermostat["chain_velocities"][replica])
    for replica in (0, 2):
        assert not torch.equal(state.positions[replica], start.positions[replica])


def test_minimum_distance_criterion_flags_molecules_that_touch_across_the_box():
    molecule_of_atom = torch.tensor([0, 0, 1, 1])
    box = torch.diag(torch.tensor([10.0, 10.0, 10.0], dtype=torch.float64))
    apart = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0], [6.0, 0, 0]], dtype=torch.float64)
    # 0.7 Å via the image
    across = torch.tensor([[0.5, 0, 0], [1.5, 0, 0], [9.8, 0, 0], [8.8, 0, 0]], dtype=torch.float64)
    criterion = MinimumDistanceCriterion(molecule_of_atom, cell=box)
    frames = torch.stack([apart, across])[None]  # one frame, two replicas
    assert criterion.unstable(frames).tolist() == [False, True]
    assert not MinimumDistanceCriterion(molecule_of_atom).unstable(frames).any()  # no cell: 7.3 Å apart


# ---------------------------------------------------------------- replica simulator


class MorsePairs(torch.nn.Module):
    """A small, smooth, strongly binding representation: per-atom energy ½ Σ_j D [(1 − e^{−a(r − r0)})² − 1] f(r),
    with the cosine cutoff f. Unlike the tiny random networks (forces ~1e-4 eV/Å) it gives forces of eV/Å."""

    def __init__(self, depth_eV: float = 1.0, width_per_A: float = 1.5, r0_A: float = 1.6, cutoff_A: float = 5.0):
        super().__init__()
        self.depth, self.width, self.r0, self.cutoff = depth_eV, width_per_A, r0_A, cutoff_A

    def forward(self, species, edge_index, vectors):
        r = torch.linalg.norm(vectors, dim=-1)
        envelope = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
        pair = self.depth * ((1.0 - torch.exp(-self.width * (r - self.r0))) ** 2 - 1.0) * envelope
        return 0.5 * torch.zeros(species.shape[0], dtype=vectors.dtype).index_add(0, edge_index[0], pair)


@pytest.fixture(scope="module")
def morse_model():
    from mlpot.models.potential import Potential

    return Potential(MorsePairs(), atomic_numbers=[1, 6, 8], cutoff=5.0, energy_shift=[0.0, 0.0, 0.0]).double()


@pytest.fixture(scope="module")
def morse_cluster_positions(morse_model, ethanol_positions):
    """16 ethanol-sized Morse clusters equilibrated at 300 K (the DFT geometry is far from the Morse minimum)."""
    positions, numbers = ethanol_positions
    integrator = LangevinBAOAB(0.25, 300.0, friction_per_fs=0.1, generator=torch.Generator().manual_seed(11))
    simulator = _simulator(morse_model, positions[:16], numbers, integrator, temperature_K=300.0)
    simulator.run(n_steps=600, record_every=600)
    return simulator.state.positions.clone()


def _simulator(model, positions, numbers, integrator, temperature_K=300.0, seed=0):
    return ReplicaSimulator.from_positions(ReplicaPotential(model, numbers), positions, integrator, temperature_K,
                                           seed=seed)


def test_velocity_verlet_conserves_energy_with_a_small_timestep(morse_model, morse_cluster_positions,
                                                                 ethanol_positions):
    _, numbers = ethanol_positions
    positions = morse_cluster_positions
    simulator = _simulator(morse_model, positions[:3], numbers, VelocityVerlet(0.1))
    trajectory = simulator.run(n_steps=400, record_every=10)  # 40 fs
    drift = (trajectory.conserved_energies - trajectory.conserved_energies[0]).abs().max()
    kinetic_swing = (trajectory.kinetic_energies.max(0).values - trajectory.kinetic_energies.min(0).values).min()
    print(f"NVE 0.1 fs: max |E - E0| {float(drift):.2e} eV; kinetic energy swings by {float(kinetic_swing):.3f} eV")
    assert float(drift) < 1e-3 * float(kinetic_swing)


@pytest.mark.parametrize("chain_length", [1, 3])
def test_nose_hoover_chain_conserves_its_extended_energy(chain_length, morse_model, morse_cluster_positions,
                                                         ethanol_positions):
    _, numbers = ethanol_positions
    positions = morse_cluster_positions
    integrator = NoseHooverChain(0.1, temperature_K=600.0, time_constant_fs=10.0, chain_length=chain_length)
    simulator = _simulator(morse_model, positions[:3], numbers, integrator, temperature_K=300.0)
    trajectory = simulator.run(n_steps=400, record_every=10)
    drift = (trajectory.conserved_energies - trajectory.conserved_energies[0]).abs().max()
    heat = (trajectory.kinetic_energies + trajectory.potential_energies).std(0).min()  # the bath exchanges energy
    print(f"NHC(M={chain_length}) 0.1 fs: max |H - H0| {float(drift):.2e} eV; "
          f"U + K varies by {float(heat):.3f} eV (std)")
    assert float(drift) < 1e-2 * float(heat)


def test_langevin_reaches_the_target_temperature(morse_model, morse_cluster_positions, ethanol_positions):
    _, numbers = ethanol_positions
    positions = morse_cluster_positions
    temperature_K = 400.0
    generator = torch.Generator().manual_seed(5)
    integrator = LangevinBAOAB(0.5, temperature_K, friction_per_fs=0.05, generator=generator)
    # start cold: the thermostat must bring the kinetic energy up to 3N/2 kT
    simulator = _simulator(morse_model, positions[:16], numbers, integrator, temperature_K=50.0)
    trajectory = simulator.run(n_steps=800, record_every=4)
    equilibrated = trajectory.kinetic_energies[50:]  # after 100 fs = 5 friction times
    expected = 1.5 * 9 * BOLTZMANN_EV_PER_K * temperature_K
    measured = float(equilibrated.mean())
    temperature = float(simulator.temperatures_K(equilibrated).mean())
    print(f"Langevin: <K> {measured:.5f} eV vs 3N/2 kT {expected:.5f} eV (T {temperature:.1f} K for {temperature_K} K)")
    assert measured == pytest.approx(expected, rel=0.05)


def test_nose_hoover_chain_holds_the_target_temperature(morse_model, morse_cluster_positions, ethanol_positions):
    _, numbers = ethanol_positions
    temperature_K = 500.0
    integrator = NoseHooverChain(0.5, temperature_K, time_constant_fs=10.0)
    simulator = _simulator(morse_model, morse_cluster_positions, numbers, integrator, temperature_K=temperature_K)
    trajectory = simulator.run(n_steps=2000, record_every=5)  # 1 ps
    temperature = float(simulator.temperatures_K(trajectory.kinetic_energies[40:]).mean())
    print(f"NHC: mean temperature {temperature:.1f} K for {temperature_K} K over 16 replicas x 0.9 ps")
    assert temperature == pytest.approx(temperature_K, rel=0.05)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_replica_forces_equal_the_deployed_models_single_frame_forces(
    arch, eager_models, model_files, ethanol_positions
):
    positions, numbers = ethanol_positions
    frames = positions[[0, 400, 800]]
    deployed = load_model(model_files[(arch, "float64")])
    cell, pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    expected = [deployed.compute(frame, numbers, cell, pbc) for frame in frames]
    for model in (eager_models[(arch, "float64")], deployed.module):
        energies, forces = ReplicaPotential(model, numbers).energies_and_forces(frames)
        for replica, single in enumerate(expected):
            assert torch.allclose(energies[replica], single["energy"], rtol=0, atol=1e-9)
            assert torch.allclose(forces[replica], single["forces"], rtol=0, atol=1e-9)


def test_periodic_replica_forces_equal_the_deployed_model(model_files, dilute_water_box):
    deployed = load_model(model_files[("egnn", "float64")])
    positions, numbers, cell, pbc = as_tensors(dilute_water_box)
    shifted = torch.stack([positions, positions + torch.tensor([6.0, -3.0, 11.0], dtype=torch.float64)])  # wraps
    energies, forces = ReplicaPotential(deployed.module, numbers, cell, pbc).energies_and_forces(shifted)
    for replica in range(2):
        single = deployed.compute(shifted[replica], numbers, cell, pbc)
        assert torch.allclose(energies[replica], single["energy"], rtol=0, atol=1e-9)
        assert torch.allclose(forces[replica], single["forces"], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, n, x: ReplicaPotential(m, n).energies_and_forces(x[0]), "shape"),
        (lambda m, n, x: ReplicaPotential(m, n, cell=torch.zeros(3)), "cell"),
        (lambda m, n, x: VelocityVerlet(0.0), "timestep_fs"),
        (lambda m, n, x: NoseHooverChain(0.5, 300.0, chain_length=0), "chain_length"),
        (lambda m, n, x: LangevinBAOAB(0.5, -1.0), "temperature_K"),
        (lambda m, n, x: _simulator(m, x[:, :5], n, VelocityVerlet(0.5)), "shape"),
        (lambda m, n, x: _simulator(m, x, n, VelocityVerlet(0.5)).run(10, 0), "record_every"),
        (lambda m, n, x: BondLengthCriterion(torch.tensor([[0, 1]]), torch.tensor([1.0, 1.1])), "one reference length"),
        (lambda m, n, x: BondLengthCriterion(torch.tensor([[0, 1]]), torch.tensor([1.0]), threshold_A=-0.5),
         "threshold"),
        (lambda m, n, x: ReplicaPotential(m, torch.tensor([6, 6, 79])), "not in this model's species"),
    ],
)
def test_simulator_rejects_bad_input_with_a_named_problem(call, message, eager_models, ethanol_positions):
    positions, numbers = ethanol_positions
    with pytest.raises(ValueError, match=message):
        call(eager_models[("egnn", "float64")], numbers, positions[:2])


# ---------------------------------------------------------------- observables


def test_distance_histogram_is_normalised_and_the_dft_reference_peaks_at_bond_lengths(ethanol_reference,
                                                                                      ethanol_positions):
    positions, _ = ethanol_positions
    bins = ethanol_reference.bins
    per_frame = distance_histogram(positions[:7].reshape(7, 1, 9, 3), bins)
    assert per_frame.shape == (7, 1, len(bins.centres()))
    assert torch.allclose(per_frame.sum(-1) * bins.bin_width_A, torch.ones(7, 1, dtype=torch.float64))
    reference = ethanol_reference.distance_histogram
    centres = bins.centres()
    assert 1.05 < float(centres[reference.argmax()]) < 1.15  # C-H bonds: 5 of the 36 pairs
    assert float(histogram_mae(reference, reference, bins)) == 0.0
    assert 0.0 < float(histogram_mae(per_frame[0, 0], reference, bins)) < 2.0


def test_velocity_autocorrelation_is_one_at_lag_zero_and_for_free_flight():
    velocities = torch.randn(1, 2, 5, 3, dtype=torch.float64).expand(20, 2, 5, 3)  # constant velocities
    vacf = velocity_autocorrelation(velocities, max_lag=10)
    assert vacf.shape == (2, 11)
    assert torch.allclose(vacf, torch.ones_like(vacf))
    alternating = velocities * torch.tensor([(-1.0) ** t for t in range(20)], dtype=torch.float64)[:, None, None, None]
    assert torch.allclose(velocity_autocorrelation(alternating, 3)[0],
                          torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))


def test_radial_distribution_of_an_ideal_gas_is_one():
    generator = torch.Generator().manual_seed(2)
    box = 12.0
    positions = torch.rand(20, 200, 3, generator=generator, dtype=torch.float64) * box
    bins = DistanceBins(r_max_A=5.0, bin_width_A=0.1, sigma_A=0.1)
    g = radial_distribution(positions, torch.eye(3, dtype=torch.float64) * box, bins)
    middle = g[(bins.centres() > 2.0) & (bins.centres() < 4.5)]
    assert torch.allclose(middle, torch.ones_like(middle), atol=0.1)


def test_kinetic_energy_uses_amu_angstrom_per_fs():
    # one hydrogen-mass particle at 0.01 Å/fs = 1000 m/s: ½ m v² = 0.5 · 1.008 · 1.66054e-27 · 1e6 J = 5.2236e-3 eV
    velocities = torch.tensor([[[0.01, 0.0, 0.0]]], dtype=torch.float64)
    assert float(kinetic_energies(velocities, torch.tensor([1.008], dtype=torch.float64))) == pytest.approx(
        5.2236e-3, rel=1e-4)


def test_covalent_bonds_and_bond_lengths_reject_bad_input():
    with pytest.raises(ValueError, match="no covalent bonds"):
        covalent_bonds([1, 1], torch.tensor([[0.0, 0, 0], [5.0, 0, 0]]))
    with pytest.raises(ValueError, match="one atomic number per atom"):
        covalent_bonds([1], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="atom indices"):
        bond_lengths(torch.zeros(2, 3), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="positive"):
        DistanceBins(r_max_A=-1.0)


# ---------------------------------------------------------------- time to instability (mlpot stability)


class ElasticNetwork(torch.nn.Module):
    """Harmonic springs between all pairs at their lengths in one reference frame: a model that never breaks."""

    def __init__(self, reference_positions: torch.Tensor, spring_eV_per_A2: float = 10.0):
        super().__init__()
        self.n_atoms = reference_positions.shape[0]
        self.register_buffer("rest_lengths", torch.cdist(reference_positions, reference_positions))
        self.spring = spring_eV_per_A2

    def forward(self, species, edge_index, vectors):
        i, j = edge_index[0] % self.n_atoms, edge_index[1] % self.n_atoms
        stretch = torch.linalg.norm(vectors, dim=-1) - self.rest_lengths[i, j]
        pair = 0.5 * self.spring * stretch**2
        return 0.5 * torch.zeros(species.shape[0], dtype=vectors.dtype).index_add(0, edge_index[0], pair)


def test_springs_stay_stable_and_a_model_without_bonds_falls_apart(ethanol_frames, ethanol_reference,
                                                                   ethanol_positions, eager_models):
    from mlpot.models.potential import Potential
    from mlpot.stable.evaluation import StabilitySettings, measure_stability

    positions, _ = ethanol_positions
    springs = Potential(ElasticNetwork(positions[0]), [1, 6, 8], cutoff=5.0, energy_shift=[0.0] * 3).double()
    settings = StabilitySettings(replicas=4, time_ps=0.2, temperature_K=500.0, check_every_fs=25.0)
    # springs' rest frame
    stable = measure_stability(springs, ethanol_frames, ethanol_reference, [0, 0, 0, 0], settings)
    assert stable.times_to_instability_ps == [0.2] * 4 and not any(stable.became_unstable)
    assert stable.unstable_fraction == [0.0] * settings.n_checks
    assert 0.0 < stable.distance_histogram_mae < 2.0

    # the tiny random network's forces are ~1e-4 eV/Å: at 500 K the atoms fly apart within ~0.1 ps
    free = measure_stability(eager_models[("egnn", "float64")], ethanol_frames, ethanol_reference,
                             [0, 300, 600, 900], settings)
    print(f"no-bond model: times to instability {free.times_to_instability_ps} ps")
    assert all(free.became_unstable) and max(free.times_to_instability_ps) < 0.2
    assert free.unstable_fraction[-1] == 1.0 and len(free.check_times_ps) < settings.n_checks


def test_stability_command_reports_times_and_writes_json(model_files, tmp_path, capsys):
    from mlpot.cli import main

    out = tmp_path / "stability.json"
    code = main(["stability", str(model_files[("egnn", "float64")]), "--system", "ethanol", "--replicas", "2",
                 "--time", "100fs", "--check-every", "25", "--out", str(out), "--quiet"])
    assert code == 0
    result = __import__("json").loads(out.read_text())
    assert len(result["times_to_instability_ps"]) == 2 \
        and result["start_frames_from"] == "evenly spaced reference frames"
    assert {"mean_ps", "std_ps", "stable_fraction", "distance_histogram_mae", "seconds_per_step"} <= set(result)
    assert "time to instability" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--time", "10 years"], "cannot read the duration"),
        (["--system", "water-192"], "no shipped reference data"),
        (["--replicas", "0"], "replicas must be a positive integer"),
        (["--check-every", "0.1"], "at least one timestep"),
    ],
)
def test_stability_command_rejects_bad_settings_in_one_line(arguments, message, model_files, capsys):
    from mlpot.cli import main

    assert main(["stability", str(model_files[("egnn", "float64")]), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


# ---------------------------------------------------------------- StABlE fine-tuning (mlpot stable)


def _tiny_parent(path) -> None:
    from mlpot.deploy import save_model
    from mlpot.models import build_model, describe

    description = describe("egnn", [1, 6, 8], 5.0, hyperparameters={"hidden": 8, "num_layers": 1})
    save_model(build_model(description, seed=0), description, path)


def _tiny_stable_config(parent, out, cycles: int):
    from mlpot.stable.config import StableConfig

    return StableConfig.from_dict({
        "parent": str(parent), "out": str(out),
        "simulation": {"replicas": 3, "segment_fs": 10.0, "record_every_fs": 2.5, "max_simulation_ps": 0.02},
        "learning": {"max_steps_per_cycle": 2, "qm_frames_per_step": 4, "qm_batch_size": 2},
        "run": {"cycles": cycles},
    })


def _rows_without_wall_clock(path):
    import csv

    from mlpot.stable.trainer import WALL_CLOCK_COLUMNS

    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS} for row in csv.DictReader(handle)]


def test_stable_config_round_trips_through_yaml_and_refuses_unknown_keys(tmp_path):
    from mlpot.stable.config import StableConfig, load_stable_config, save_stable_config
    from mlpot.train.config import apply_override

    config = StableConfig.from_dict({"parent": "model.pt", "simulation": {"replicas": 12}, "learning": {"lr": 0.002}})
    save_stable_config(config, tmp_path / "config.yaml")
    assert load_stable_config(tmp_path / "config.yaml") == config
    apply_override(config, "learning.energy_force_weight=3")
    assert config.learning.energy_force_weight == 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['replica'\] in config section 'simulation'"):
        StableConfig.from_dict({"simulation": {"replica": 8}})
    with pytest.raises(ValueError, match=r"unknown top-level config key\(s\) \['cycles'\]"):
        StableConfig.from_dict({"cycles": 3})
    with pytest.raises(ValueError, match="unknown key 'learning_rate' in section 'learning'"):
        apply_override(config, "learning.learning_rate=0.1")
    (tmp_path / "bad.yaml").write_text("run: {cycles: 2, speed: fast}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) \['speed'\]"):
        load_stable_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("key, value, message", [
    ("simulation.replicas", 1, "simulation.replicas must be an integer >= 2"),
    ("simulation.timestep_fs", -0.5, "simulation.timestep_fs must be a positive number"),
    ("learning.observable_loss", "kl", "unknown learning.observable_loss 'kl'"),
    ("simulation.unstable_fraction_to_learn", 1.5, "must be a fraction in"),
    ("learning.energy_force_weight", -1, "must be a non-negative number"),
    ("learning.energy_force_weight", "ten", "must be a non-negative number"),
    ("learning.grad_clip", "one", "learning.grad_clip must be a positive number or null"),
    ("run.max_minutes", "an hour", "run.max_minutes must be a positive number or null"),
    ("run.max_time_minutes", "an hour", "run.max_minutes must be a positive number or null"),  # the old name
])
def test_stable_config_rejects_bad_settings_with_a_named_problem(key, value, message):
    from mlpot.stable.config import StableConfig
    from mlpot.train.config import apply_override

    config = StableConfig.from_dict({"parent": "model.pt"})
    apply_override(config, f"{key}={value}")
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match="no parent model"):
        StableConfig().validate()


def test_energy_reference_refit_removes_the_constant_energy_error_and_changes_no_force(ethanol_frames):
    """The observable gradient cannot see U → U + const; the re-fit puts the offset back from the DFT energies."""
    from mlpot.data import collate, frames_to_graphs
    from mlpot.models import build_model, describe
    from mlpot.stable.energy_force import refit_energy_references
    from mlpot.train.predict import predict_batch

    description = describe("egnn", [1, 6, 8], 5.0, hyperparameters={"hidden": 8, "num_layers": 1}, dtype="float64")
    model = build_model(description, seed=0)
    graphs = frames_to_graphs(ethanol_frames[:40], 5.0)
    batch = collate(graphs, model.species_table, torch.float64, "cpu")
    forces_before = predict_batch(model, batch, create_graph=False)["forces"]
    refit_energy_references(model, graphs)
    predicted = predict_batch(model, batch, create_graph=False)
    assert abs(float(((predicted["energy"] - batch.energy) / batch.n_atoms).mean())) < 1e-8
    with torch.no_grad():
        model.energy_shift += 0.3  # eV per atom of every element: 2.7 eV per ethanol
    assert refit_energy_references(model, graphs) == pytest.approx(-0.3, abs=1e-8)  # eV/atom
    after = predict_batch(model, batch, create_graph=False)
    assert torch.allclose(after["energy"], predicted["energy"], rtol=0, atol=1e-8)
    assert torch.equal(after["forces"], forces_before)


def test_stable_cycle_checkpoints_and_resume_takes_exactly_the_same_next_cycle(tmp_path):
    from mlpot.stable.trainer import stable_train

    _tiny_parent(tmp_path / "parent.pt")
    straight = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "straight", 2), quiet=True)
    assert straight.cycles_done == 2 and straight.learning_steps >= 2

    first = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "resumed", 1), quiet=True)
    assert first.cycles_done == 1 and (tmp_path / "resumed" / "checkpoint.pt").is_file()
    with pytest.raises(FileExistsError, match="--resume"):
        stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "resumed", 2), quiet=True)
    resumed = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "resumed", 2),
                           resume=True, quiet=True)

    rows = _rows_without_wall_clock(tmp_path / "straight" / "log.csv")
    assert {row["phase"] for row in rows} == {"simulate", "learn"}
    assert _rows_without_wall_clock(tmp_path / "resumed" / "log.csv") == rows
    assert resumed.learning_steps == straight.learning_steps
    for name in ("model.pt", "metrics.json", "unstable_fraction.png", "distance_histogram.png", "force_errors.png"):
        assert (tmp_path / "straight" / name).is_file(), name


def test_sigterm_during_a_learning_step_stops_after_it_and_resume_takes_exactly_the_uninterrupted_steps(
        tmp_path, monkeypatch):
    import os
    import signal

    from mlpot.stable.trainer import StableInterrupted, StableTrainer, stable_train

    _tiny_parent(tmp_path / "parent.pt")
    straight = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "straight", 1), quiet=True)
    original_build = StableTrainer._build

    def build_with_hook(self, state):  # SIGTERM right after the first optimiser step, mid-bookkeeping
        original_build(self, state)
        self.optimizer.register_step_post_hook(
            lambda *_: os.kill(os.getpid(), signal.SIGTERM) if self.progress["learning_steps"] == 0 else None)

    monkeypatch.setattr(StableTrainer, "_build", build_with_hook)
    with pytest.raises(StableInterrupted, match="holds the last finished step; continue with --resume"):
        stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "stopped", 1), quiet=True)
    monkeypatch.setattr(StableTrainer, "_build", original_build)
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)  # tensors and plain types only
    assert state["kind"] == "StABlE" and state["progress"]["learning_steps"] == 1  # the step was finished and kept
    resumed = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "stopped", 1),
                           resume=True, quiet=True)
    assert _rows_without_wall_clock(tmp_path / "stopped" / "log.csv") == \
        _rows_without_wall_clock(tmp_path / "straight" / "log.csv")
    assert resumed.learning_steps == straight.learning_steps


def test_a_second_stable_run_on_a_locked_folder_is_refused_by_name(tmp_path):
    from mlpot.runs import RunLock, RunLockedError
    from mlpot.stable.trainer import stable_train

    _tiny_parent(tmp_path / "parent.pt")
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match="is in use by pid .*two runs must not write into one folder"):
            stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 1), quiet=True)


def test_resume_refuses_a_changed_setting_or_parent(tmp_path):
    from mlpot.stable.trainer import stable_train

    _tiny_parent(tmp_path / "parent.pt")
    stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 1), quiet=True)
    changed = _tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 2)
    changed.learning.lr = 0.01
    changed.simulation.replicas = 4
    with pytest.raises(ValueError, match=r"--resume: the StABlE run in .* was made with other settings, "
                                         r"so it cannot be continued: learning.lr: was 0.0005, now 0.01; "
                                         r"simulation.replicas: was 3, now 4$"):
        stable_train(changed, resume=True, quiet=True)  # every difference named; run.cycles may change
    _tiny_parent(tmp_path / "parent.pt")  # same weights, new file (new time stamp)
    with pytest.raises(ValueError, match="sha256 differs"):
        stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 2), resume=True, quiet=True)


def test_exported_stable_model_loads_and_records_its_parent_and_settings(tmp_path):
    from mlpot.deploy import load_model
    from mlpot.runs import file_digest
    from mlpot.stable.trainer import stable_train

    _tiny_parent(tmp_path / "parent.pt")
    result = stable_train(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 1), quiet=True)
    deployed = load_model(result.model_path)
    record = deployed.metadata["provenance"]["stable"]
    assert record["parent_sha256"] == file_digest(str(tmp_path / "parent.pt"))
    assert record["config"]["simulation"]["threshold_A"] == TRAINING_BOND_THRESHOLD_A
    assert record["learning_steps"] == result.learning_steps and record["cycles"] == 1
    assert deployed.metadata["arch"] == "egnn" and deployed.species == ["H", "C", "O"]


def test_stable_command_runs_a_config_and_names_a_bad_key(tmp_path, capsys):
    from mlpot.cli import main
    from mlpot.stable.config import save_stable_config

    _tiny_parent(tmp_path / "parent.pt")
    save_stable_config(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 1), tmp_path / "stable.yaml")
    assert main(["stable", str(tmp_path / "stable.yaml"), "--quiet", "--set", "run.seed=3"]) == 0
    assert "model file" in capsys.readouterr().out
    assert main(["stable", str(tmp_path / "stable.yaml"), "--set", "run.speed=2"]) == 2
    assert "unknown key 'speed' in section 'run'" in capsys.readouterr().err
    assert main(["stable", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml not found" in capsys.readouterr().err


class HarmonicBond(torch.nn.Module):
    """U = ½ k (r − r0)² for the one bond of a diatomic, with a learnable rest length r0 (Å)."""

    def __init__(self, rest_length_A: float, spring_eV_per_A2: float = 20.0):
        super().__init__()
        self.rest_length = torch.nn.Parameter(torch.tensor(rest_length_A, dtype=torch.float64))
        self.spring = spring_eV_per_A2

    def forward(self, species, edge_index, vectors):
        r = torch.linalg.norm(vectors, dim=-1)
        pair = 0.5 * self.spring * (r - self.rest_length) ** 2
        return 0.5 * torch.zeros(species.shape[0], dtype=vectors.dtype).index_add(0, edge_index[0], pair)


@pytest.mark.slow
def test_learning_steps_move_the_mean_bond_length_of_a_harmonic_model_to_the_reference():
    """Boltzmann-estimator steps on L = (⟨r⟩ − 1.10 Å)², from samples of the model's own simulation,
    must pull a CO model with rest length 1.30 Å to ⟨r⟩ ≈ 1.10 Å (r0 just below: ⟨r⟩ ≈ r0 + 2kT/(k r0) at 500 K)."""
    from mlpot.models.potential import Potential
    from mlpot.stable.trainer import backward_observable_loss

    target_A, temperature_K = 1.10, 500.0
    model = Potential(HarmonicBond(1.30), atomic_numbers=[6, 8], cutoff=3.0, energy_shift=[0.0, 0.0]).double()
    potential = ReplicaPotential(model, [6, 8])
    start = torch.tensor([[[0.0, 0.0, 0.0], [1.3, 0.0, 0.0]]], dtype=torch.float64).repeat(8, 1, 1)
    integrator = LangevinBAOAB(0.5, temperature_K, friction_per_fs=0.05, generator=torch.Generator().manual_seed(1))
    simulator = ReplicaSimulator.from_positions(potential, start, integrator, temperature_K, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    bond = torch.tensor([[0, 1]])
    losses = []
    for _ in range(30):
        simulator.restart_from(simulator.state)  # the model changed: forces at the current positions
        simulator.run(60, 60)  # relax to the new model first
        samples = simulator.run(120, 5).positions.reshape(-1, 2, 3)
        optimizer.zero_grad()
        losses.append(backward_observable_loss(potential, samples, lambda s: bond_lengths(s, bond)[:, 0],
                                               squared_error_loss(torch.tensor(target_A)), temperature_K))
        optimizer.step()
    simulator.restart_from(simulator.state)
    simulator.run(60, 60)
    final = bond_lengths(simulator.run(600, 5).positions, bond).mean().item()
    rest_length = model.representation.rest_length.item()
    print(f"losses {losses[0]:.4f} -> {losses[-1]:.5f}; r0 {rest_length:.3f} A, <r> {final:.3f} A")
    assert losses[-1] < 0.05 * losses[0]
    assert abs(final - target_A) < 0.025  # from 0.2 Å away (Adam overshoots by ~0.01-0.02 Å)
    assert rest_length < target_A


def test_parent_comes_from_a_model_file_or_the_best_ema_weights_of_a_training_checkpoint(tmp_path):
    from mlpot.models import build_model, describe
    from mlpot.stable.parent import load_parent

    _tiny_parent(tmp_path / "parent.pt")
    from_file = load_parent(tmp_path / "parent.pt")
    assert from_file.description["arch"] == "egnn" and from_file.split is None

    description = describe("egnn", [1, 6, 8], 5.0, hyperparameters={"hidden": 8, "num_layers": 1})
    best, current = build_model(description, seed=1), build_model(description, seed=2)
    torch.save({"description": description, "ema": {"module": current.state_dict()}, "best_ema": best.state_dict(),
                "config": {"data": {"files": [str(ETHANOL_DFT)]}}, "split": {"train": [0, 1], "val": [], "test": [2]}},
               tmp_path / "checkpoint.pt")
    from_checkpoint = load_parent(tmp_path / "checkpoint.pt")
    assert all(torch.equal(a, b)
               for a, b in zip(from_checkpoint.model.state_dict().values(), best.state_dict().values()))
    assert from_checkpoint.split["test"] == [2] and from_checkpoint.split_file == str(ETHANOL_DFT)

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="neither an mlpot model file nor a readable training checkpoint"):
        load_parent(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="parent model .*missing.pt not found"):
        load_parent(tmp_path / "missing.pt")


def test_observable_file_sets_the_reference_histogram_and_a_foreign_molecule_is_refused(tmp_path):
    import ase.io

    from mlpot.data.readers import read_frames
    from mlpot.md.reference import molecule_reference
    from mlpot.stable.trainer import StableTrainer

    _tiny_parent(tmp_path / "parent.pt")
    hot = [atoms for atoms in ase.io.read(ETHANOL_DFT, index=":") if float(atoms.info["temperature_K"]) >= 500.0]
    ase.io.write(tmp_path / "hot.extxyz", hot[:20])
    config = _tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run", 1)
    config.data.observable_file = str(tmp_path / "hot.extxyz")
    trainer = StableTrainer(config, quiet=True)
    trainer._build(None)
    expected = molecule_reference(read_frames(tmp_path / "hot.extxyz"), trainer.bins).distance_histogram
    assert torch.allclose(trainer.reference.distance_histogram, expected)
    default = StableTrainer(_tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run2", 1), quiet=True)
    default._build(None)
    assert not torch.allclose(default.reference.distance_histogram, expected)

    ase.io.write(tmp_path / "reordered.extxyz", [hot[0][::-1]])  # the same atoms in another order
    config = _tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run3", 1)
    config.data.observable_file = str(tmp_path / "reordered.extxyz")
    with pytest.raises(ValueError, match=r"data.observable_file .*reordered.extxyz holds another molecule than"):
        StableTrainer(config, quiet=True)._build(None)
    config = _tiny_stable_config(tmp_path / "parent.pt", tmp_path / "run4", 1)
    config.data.observable_file = str(tmp_path / "missing.extxyz")
    with pytest.raises(FileNotFoundError, match=r"^data.observable_file .*missing.extxyz not found$"):
        StableTrainer(config, quiet=True)._build(None)
