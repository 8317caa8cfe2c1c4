"""Which implicit solvent a peptide runs in, and OBC2 as OpenMM's native ``GBSAOBCForce``.

A system registered in :mod:`mlpot.systems` names its force field files, e.g. amber14 +
``implicit/gbn2.xml`` (GBn2) for polyproline and chignolin. :func:`solvent_forcefield_files`
swaps the implicit-solvent file for another of :data:`IMPLICIT_SOLVENTS` (``gbn2``, ``obc2``,
or ``vacuum``: none).

OpenMM's ``implicit/obc2.xml`` builds OBC2 as a ``CustomGBForce`` (the same expressions as
``openmm.app.internal.customgbforces.GBSAOBC2Force``), which the CPU platform evaluates as a
generic expression. OpenMM also has OBC2 as a native force, ``GBSAOBCForce``, with the same
functional form (offset 0.009 nm, tanh(ψ − 0.8ψ² + 4.85ψ³), ACE surface term at
2.25936 kJ/mol/nm²). :func:`use_native_obc2` replaces the custom force by the native one with the
same per-atom parameters (the file's offset radius ``or`` and scaled offset radius ``sr`` become
radius ``or + 0.009`` nm and scale ``sr / or``), so the energy is the file's to single-precision
round-off (tested), and a step is several times cheaper: one chignolin copy (138 atoms, 1 CPU thread,
``NoCutoff``) took 0.8 against 3.7 ms per step, and a PIPS iteration of 16 × 1000 steps 12.4 s against
53.5 s for GBn2 (``benchmarks/pips_speed.py --solvents gbn2 obc2``). Under a cutoff the native
force loses much of its lead (24.7 s in one Context), so the peptides run it on the single-copy System
(layout ``single-copy``), replica by replica.
GBn2 has no native force and stays a ``CustomGBForce``.

Units: nm, kJ/mol (OpenMM's).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import openmm

IMPLICIT_SOLVENTS: Dict[str, Optional[str]] = {
    "gbn2": "implicit/gbn2.xml",
    "obc2": "implicit/obc2.xml",
    "vacuum": None,
}
OBC2_FILE = "implicit/obc2.xml"
OBC_OFFSET_NM = 0.009  # the dielectric offset of GBSAOBCForce and of the OBC2 CustomGBForce


def solvent_forcefield_files(forcefield_files: Sequence[str], solvent: Optional[str]) -> Tuple[str, ...]:
    """``forcefield_files`` with its ``implicit/*.xml`` file replaced by ``solvent``'s (None: as they are)."""
    if solvent is None:
        return tuple(forcefield_files)
    if solvent not in IMPLICIT_SOLVENTS:
        raise ValueError(f"unknown implicit solvent {solvent!r}; known: {', '.join(IMPLICIT_SOLVENTS)}")
    kept = tuple(name for name in forcefield_files if not name.startswith("implicit/"))
    solvent_file = IMPLICIT_SOLVENTS[solvent]
    return kept if solvent_file is None else kept + (solvent_file,)


def use_native_obc2(system: openmm.System) -> bool:
    """Replace the OBC2 ``CustomGBForce`` that ``implicit/obc2.xml`` put into ``system`` by an
    equivalent native ``GBSAOBCForce`` (same parameters, nonbonded method and cutoff); True if one
    was replaced. Other forces are left alone."""
    nonbonded = [force for force in system.getForces() if isinstance(force, openmm.NonbondedForce)]
    custom = [(index, force) for index, force in enumerate(system.getForces())
              if isinstance(force, openmm.CustomGBForce) and _is_obc2(force)]
    if not custom:
        return False
    if len(custom) > 1 or len(nonbonded) != 1:
        raise ValueError("expected one OBC2 CustomGBForce and one NonbondedForce in the System")
    index, force = custom[0]
    native = openmm.GBSAOBCForce()
    for particle in range(force.getNumParticles()):
        charge, offset_radius_nm, scaled_offset_radius_nm = force.getParticleParameters(particle)
        native.addParticle(charge, offset_radius_nm + OBC_OFFSET_NM, scaled_offset_radius_nm / offset_radius_nm)
    native.setSolventDielectric(_global_value(force, "solventDielectric"))
    native.setSoluteDielectric(_global_value(force, "soluteDielectric"))
    method = force.getNonbondedMethod()
    if method == openmm.CustomGBForce.NoCutoff:
        native.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    elif method == openmm.CustomGBForce.CutoffNonPeriodic:
        native.setNonbondedMethod(openmm.GBSAOBCForce.CutoffNonPeriodic)
    else:
        native.setNonbondedMethod(openmm.GBSAOBCForce.CutoffPeriodic)
    native.setCutoffDistance(force.getCutoffDistance())
    native.setForceGroup(force.getForceGroup())
    system.removeForce(index)
    system.addForce(native)
    return True


def _is_obc2(force: openmm.CustomGBForce) -> bool:
    """The force is OpenMM's OBC2 (its Born-radius expression), with the ACE surface term."""
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    expressions = [force.getComputedValueParameters(i)[1] for i in range(force.getNumComputedValues())]
    energy_terms = [force.getEnergyTermParameters(i)[0] for i in range(force.getNumEnergyTerms())]
    return (names == ["charge", "or", "sr"] and any("tanh(psi-0.8*psi^2+4.85*psi^3)" in e for e in expressions)
            and any(term.startswith("28.3919551*") for term in energy_terms)
            and "kappa=0;" in energy_terms[0].replace(" ", "") + ";")


def _global_value(force: openmm.CustomGBForce, name: str) -> float:
    """A constant the OBC2 expressions set inline (``; name=value``)."""
    for term_index in range(force.getNumEnergyTerms()):
        expression = force.getEnergyTermParameters(term_index)[0]
        for part in expression.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return float(value)
    raise ValueError(f"the OBC2 force sets no {name}")
