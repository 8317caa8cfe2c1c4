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
"""

from __future__ import annotations

import math

import numpy as np
import openmm
from openmm import unit

from mlpot.pips.dynamics import LangevinSettings

CONTROL_FORCE = "control_force"
MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def langevin_settings(timestep_ps: float, friction_per_ps: float, temperature_K: float,
                      controlled_noise_fraction: float = 1.0) -> LangevinSettings:
    """:class:`LangevinSettings` in OpenMM units (ps, 1/ps, kJ/mol) for a temperature in K."""
    return LangevinSettings(timestep_ps, friction_per_ps, MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K * temperature_K,
                            controlled_noise_fraction)


def controlled_langevin_integrator(settings: LangevinSettings,
                                   constraint_tolerance: float = 1e-6) -> openmm.CustomIntegrator:
    """The integrator described in the module docstring, for ``settings`` in OpenMM units."""
    integrator = openmm.CustomIntegrator(settings.timestep)
    damping = settings.velocity_damping
    integrator.addGlobalVariable("a", damping)
    integrator.addGlobalVariable("b", math.sqrt(1.0 - damping * damping))
    integrator.addGlobalVariable("kT_thermal", (1.0 - settings.controlled_noise_fraction) * settings.kT)
    integrator.addPerDofVariable(CONTROL_FORCE, 0.0)
    integrator.addPerDofVariable("x_before_constraints", 0.0)
    integrator.addUpdateContextState()
    integrator.addComputePerDof("v", "v + dt*f/m")
    integrator.addConstrainVelocities()
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("v", f"a*v + b*sqrt(kT_thermal/m)*gaussian + dt*{CONTROL_FORCE}/m")
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("x_before_constraints", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "v + (x - x_before_constraints)/dt")
    integrator.setConstraintTolerance(constraint_tolerance)
    return integrator


def set_control_forces(integrator: openmm.CustomIntegrator, forces_kj_mol_nm: np.ndarray) -> None:
    """The force (n_atoms, 3) in kJ/mol/nm that the next step adds to every atom's physical force."""
    integrator.setPerDofVariableByName(CONTROL_FORCE, np.ascontiguousarray(forces_kj_mol_nm, dtype=np.float64))
