"""The controlled Langevin integrator inside OpenMM: the engine side of PIPS rollouts.

A ``CustomIntegrator`` implementing OpenMM's LangevinMiddle scheme (BAOAB with the O step in the
middle, constraints as in ``LangevinMiddleIntegrator``) with one addition: a per-degree-of-freedom
variable ``control_force`` whose impulse is added in the O step, next to the thermal noise,

    v ← v + dt F / m,   x ← x + ½ dt v,   v ← a v + b √(kT_th/m) N(0,1) + dt · control_force / m,
    x ← x + ½ dt v,   constrain,

with a = exp(−γ dt), b = √(1 − a²). (Added before the O step, the recorded kick would be damped by
a and the uncontrolled dynamics would run cold by a fraction f(1 − a²), 1.2% in the test.) The
rollout driver sets ``control_force`` before every step to u + dW_c / dt, the policy's control plus
the **recorded** controlled-channel kick, so the step adds the momentum u dt + dW_c exactly as
:mod:`mlpot.pips.dynamics` does. The integrator's own noise carries only the thermal rest: kT_th =
(1 − f) kT for a controlled-noise fraction f, and the controlled kick has Var(dW_c) = f (1 − a²) m
kT (:meth:`LangevinSettings.kick_variances`), so the uncontrolled dynamics is Langevin dynamics at
kT whatever f is.

Everything here is in OpenMM's units: ps, nm, amu, kJ/mol, control forces in kJ/mol/nm (one
value per atom and axis); the policies work in the same units (:mod:`mlpot.pips.molecular.rollout`),
so nothing is converted between them. Setting the forces costs one ``setPerDofVariableByName`` call per step
(~0.04 ms for 352 atoms on the CPU platform), not one parameter update per atom.

**Multiple time steps** (``slow_force_interval`` n > 1, impulse r-RESPA as in OpenMM's
``MTSLangevinIntegrator``): :func:`split_force_groups` puts the bonded terms (bonds, angles,
torsions, CMAP) into force group 0 and everything else (Coulomb and Lennard-Jones, implicit
solvent, an mlpot model) into group 1. The B step then adds dt · F₀/m every step and n · dt · F₁/m
every n-th step (the first step of a rollout included), so the slow forces, which cost most of a
step in implicit solvent, are computed once per n steps and their impulse per unit time is
unchanged. n = 1 (default) is the integrator above, exactly. The path weights do not depend on the
physical force (only on u and dW_c), so the PIPS estimator stays exact for the dynamics it runs.
:func:`restart` rewinds the step counter; the rollout does so at every rollout's start.
"""

from __future__ import annotations

import math

import numpy as np
import openmm
from openmm import unit

from mlpot.pips.dynamics import LangevinSettings

CONTROL_FORCE = "control_force"
SLOW_STEP = "steps_since_slow_impulse"
FAST_FORCE_GROUP, SLOW_FORCE_GROUP = 0, 1
BONDED_FORCES = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce,
                 openmm.CMAPTorsionForce, openmm.RBTorsionForce)
MIN_DAMPING_FOR_MERGED_STEP = 0.5  # a = exp(−γ dt) at least this (γ dt ≤ ln 2): the two-pass step without constraints
MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def langevin_settings(timestep_ps: float, friction_per_ps: float, temperature_K: float,
                      controlled_noise_fraction: float = 1.0) -> LangevinSettings:
    """:class:`LangevinSettings` in OpenMM units (ps, 1/ps, kJ/mol) for a temperature in K."""
    return LangevinSettings(timestep_ps, friction_per_ps, MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K * temperature_K,
                            controlled_noise_fraction)


def controlled_langevin_integrator(settings: LangevinSettings, constraint_tolerance: float = 1e-6,
                                   slow_force_interval: int = 1, constraints: bool = True) -> openmm.CustomIntegrator:
    """The integrator described in the module docstring, for ``settings`` in OpenMM units; with
    ``slow_force_interval`` n > 1 the forces of group 1 act every n-th step (impulse r-RESPA), and the
    System's forces must be in groups 0 and 1 (:func:`split_force_groups`). ``constraints=False`` (only for a
    System without constraints, :func:`integrator_for`) leaves out the constraint steps, which would change
    nothing there (the same trajectory, ~0.02 ms per step less for 138 atoms on the CPU platform), and takes the
    kick, drifts and O step in two per-DOF passes instead of four (:func:`_add_merged_kick_and_drift`: the same scheme
    to round-off, ~0.015 ms per step less)."""
    check_slow_force_interval(slow_force_interval)
    integrator = openmm.CustomIntegrator(settings.timestep)
    damping = settings.velocity_damping
    integrator.addGlobalVariable("a", damping)
    integrator.addGlobalVariable("b", math.sqrt(1.0 - damping * damping))
    integrator.addGlobalVariable("kT_thermal", (1.0 - settings.controlled_noise_fraction) * settings.kT)
    integrator.addPerDofVariable(CONTROL_FORCE, 0.0)
    if constraints:
        integrator.addPerDofVariable("x_before_constraints", 0.0)
    integrator.addUpdateContextState()
    fast_force = "f" if slow_force_interval == 1 else f"f{FAST_FORCE_GROUP}"
    if slow_force_interval > 1:
        integrator.addGlobalVariable(SLOW_STEP, 0)  # steps since the last slow impulse
        integrator.beginIfBlock(f"{SLOW_STEP} = 0")
        integrator.addComputePerDof("v", f"v + {slow_force_interval}*dt*f{SLOW_FORCE_GROUP}/m")
        integrator.endBlock()
        integrator.addComputeGlobal(SLOW_STEP, f"select(step({SLOW_STEP} + 1 - {slow_force_interval}), 0, "
                                               f"{SLOW_STEP} + 1)")
    integrator.setConstraintTolerance(constraint_tolerance)
    if not constraints and damping >= MIN_DAMPING_FOR_MERGED_STEP:
        _add_merged_kick_and_drift(integrator, fast_force, settings.controlled_noise_fraction < 1.0)
        return integrator
    integrator.addComputePerDof("v", f"v + dt*{fast_force}/m")
    if constraints:
        integrator.addConstrainVelocities()
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("v", f"a*v + b*sqrt(kT_thermal/m)*gaussian + dt*{CONTROL_FORCE}/m")
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    if constraints:
        integrator.addComputePerDof("x_before_constraints", "x")
        integrator.addConstrainPositions()
        integrator.addComputePerDof("v", "v + (x - x_before_constraints)/dt")
    return integrator


def _add_merged_kick_and_drift(integrator: openmm.CustomIntegrator, fast_force: str, thermal_noise: bool) -> None:
    """The B, A, O, A updates of a step without constraints (after the slow impulse, if any) as two per-DOF passes:

        v ← a (v + dt F/m) + η + dt c/m,    x ← x + ½ dt (v₁ + v),   v₁ = (v − η − dt c/m) / a,

    where v₁ = v + dt F/m is the velocity after the kick, η the thermal noise b √(kT_th/m) N(0,1) (kept in a per-DOF
    variable when kT_th > 0, so that both passes see the same draw) and c the control force. Both half-drifts of the
    four-pass form add up to this x (no force is evaluated between them), so it is the same scheme; v₁ is recovered
    from v instead of stored, which costs one rounding of relative size ~1/a (a ≥ :data:`MIN_DAMPING_FOR_MERGED_STEP`).
    Each per-DOF pass costs ~7 µs for 138 atoms on the CPU platform: 15 of ~400 µs per chignolin step."""
    kick = f"dt*{CONTROL_FORCE}/m"  # the controlled kick per unit mass: u dt + dW_c over m
    if thermal_noise:
        integrator.addPerDofVariable("thermal_kick", 0.0)
        integrator.addComputePerDof("thermal_kick", "b*sqrt(kT_thermal/m)*gaussian")
        kick = f"thermal_kick + {kick}"
    integrator.addComputePerDof("v", f"a*(v + dt*{fast_force}/m) + {kick}")
    integrator.addComputePerDof("x", f"x + 0.5*dt*((v - ({kick}))/a + v)")


def integrator_for(system: openmm.System, settings: LangevinSettings,
                   slow_force_interval: int = 1) -> openmm.CustomIntegrator:
    """The controlled integrator for ``system``: constraint steps only if it has constraints; with
    ``slow_force_interval`` > 1 its forces must already be split (:func:`split_force_groups`)."""
    return controlled_langevin_integrator(settings, slow_force_interval=slow_force_interval,
                                          constraints=system.getNumConstraints() > 0)


def check_slow_force_interval(value) -> None:
    """ValueError in one line unless ``value`` is a positive integer (a run's setting, or the integrator's)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"slow_force_interval must be a positive integer, got {value!r}")


def split_force_groups(system: openmm.System) -> None:
    """Bonded terms into :data:`FAST_FORCE_GROUP`, every other force into :data:`SLOW_FORCE_GROUP`
    (energies are unchanged; only a multiple-time-step integrator tells the groups apart)."""
    for force in system.getForces():
        force.setForceGroup(FAST_FORCE_GROUP if isinstance(force, BONDED_FORCES) else SLOW_FORCE_GROUP)


def restart(integrator: openmm.CustomIntegrator) -> None:
    """The next step is a rollout's first: with multiple time steps it gives the slow impulse."""
    index = slow_step_variable(integrator)
    if index is not None:
        integrator.setGlobalVariable(index, 0.0)


def slow_step_variable(integrator: openmm.CustomIntegrator) -> int | None:
    """The index of the integrator's global variable counting steps since the last slow impulse (None without
    multiple time steps), for ``getGlobalVariable``/``setGlobalVariable``."""
    for index in range(integrator.getNumGlobalVariables()):
        if integrator.getGlobalVariableName(index) == SLOW_STEP:
            return index
    return None


def set_control_forces(integrator: openmm.CustomIntegrator, forces_kj_mol_nm: np.ndarray) -> None:
    """The force (n_atoms, 3) in kJ/mol/nm that the next step adds to every atom's physical force."""
    integrator.setPerDofVariableByName(CONTROL_FORCE, np.ascontiguousarray(forces_kj_mol_nm, dtype=np.float64))
