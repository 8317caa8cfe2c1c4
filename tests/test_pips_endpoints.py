"""A PIPS run's start and target relaxed on its own physics (mlpot.pips.molecular.endpoints), and hit tests centred
on the run's target."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

from mlpot.pips.molecular.endpoints import transition_endpoints
from mlpot.pips.molecular.peptides import peptide_transition
from mlpot.pips.molecular.replicas import build_replicas


@pytest.fixture(scope="module")
def alanine():
    transition = peptide_transition("alanine-dipeptide")
    topology, start, target = transition.load()
    system = build_replicas(topology, start, 1, layout="single-copy").single_system  # amber14, vacuum
    return transition, system, start, target


def test_as_shipped_endpoints_are_the_shipped_structures(alanine):
    transition, system, start, target = alanine
    endpoints = transition_endpoints(transition, system, "as-shipped")
    np.testing.assert_array_equal(endpoints.start_nm, start)
    np.testing.assert_array_equal(endpoints.target_nm, target)


def test_relaxing_on_the_force_field_that_made_the_structures_barely_moves_them(alanine):
    transition, system, start, target = alanine
    endpoints = transition_endpoints(transition, system, "minimised")
    assert endpoints.start_moved_nm < 0.01 and endpoints.target_moved_nm < 0.01
    for relaxed, shipped in ((endpoints.start_nm, start), (endpoints.target_nm, target)):
        angles = [float(a) for a in transition.dihedrals_deg(torch.from_numpy(relaxed))]
        expected = [float(a) for a in transition.dihedrals_deg(torch.from_numpy(shipped))]
        assert angles == pytest.approx(expected, abs=5.0)


def test_a_potential_without_a_minimum_near_the_target_is_refused_in_one_line(alanine):
    transition, system, start, _ = alanine
    pulled = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    to_start = openmm.CustomExternalForce("1e5*((x-x0)^2+(y-y0)^2+(z-z0)^2)")  # every minimum is the start
    for name in ("x0", "y0", "z0"):
        to_start.addPerParticleParameter(name)
    for index, position in enumerate(start):
        to_start.addParticle(index, list(position))
    pulled.addForce(to_start)
    with pytest.raises(ValueError, match="leaves the target basin .*phi .* psi") as error:
        transition_endpoints(transition, pulled, "minimised")
    assert "\n" not in str(error.value)


def test_unknown_endpoints_are_refused_by_name(alanine):
    transition, system, _, _ = alanine
    with pytest.raises(ValueError, match="endpoints must be one of as-shipped, minimised, got 'relaxed'"):
        transition_endpoints(transition, system, "relaxed")


def test_the_literature_hit_test_is_centred_on_the_runs_target(alanine):
    transition, _, start, target = alanine
    target_frame, start_frame = torch.from_numpy(target), torch.from_numpy(start)
    assert bool(transition.in_literature_basin(target_frame))
    assert not bool(transition.in_literature_basin(target_frame, start_frame))
    assert bool(transition.in_literature_basin(start_frame, start_frame))


def test_runs_with_a_learned_potential_relax_their_endpoints_by_default():
    from mlpot.pips.runs import PipsRunConfig

    assert PipsRunConfig("alanine-dipeptide", None, "model.pt", {}).train_config().endpoints == "minimised"
    assert PipsRunConfig("alanine-dipeptide", None, None, {}).train_config().endpoints == "as-shipped"
    chosen = PipsRunConfig("alanine-dipeptide", None, "model.pt", {"endpoints": "as-shipped"}).train_config()
    assert chosen.endpoints == "as-shipped"
