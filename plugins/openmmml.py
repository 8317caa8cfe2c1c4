"""openmm-ml backend: ``MLPotential("mlpot", modelPath="model.pt")``.

Registered through the entry point ``openmmml.potentials: mlpot`` (see pyproject.toml), so
``createSystem`` and ``createMixedSystem`` work as for openmm-ml's built-in potentials. Species,
cutoff and units come from the model file; no ``lengthScale``/``energyScale`` arguments are needed.
"""

from __future__ import annotations

from typing import Iterable, Optional

import openmm


class MLPotImplFactory:
    """Creates :class:`MLPotImpl` for the name ``mlpot`` (openmm-ml's ``MLPotentialImplFactory`` interface).

    Defined before openmmml is imported below: importing openmmml loads every registered entry point,
    this one included, so the factory must already exist when this module is the first to import openmmml.
    """

    known_arguments = ("modelPath",)

    def createImpl(self, name: str, modelPath: Optional[str] = None, **args) -> MLPotImpl:
        """Raises ``TypeError`` for an argument other than ``modelPath`` (a typo would otherwise be
        ignored silently) and ``ValueError`` without ``modelPath``."""
        if args:
            raise TypeError(
                f"MLPotential('mlpot', ...) got unknown argument(s) {', '.join(sorted(args))}; "
                f"it knows only {', '.join(self.known_arguments)} (species, cutoff and units come from the model file)"
            )
        if modelPath is None:
            raise ValueError("MLPotential('mlpot', ...) needs modelPath=<path to an mlpot model file>")
        return MLPotImpl(name, modelPath)


from openmmml.mlpotential import MLPotentialImpl  # noqa: E402  (see MLPotImplFactory)


class MLPotImpl(MLPotentialImpl):
    """An mlpot model file as an openmm-ml potential.

    Args:
        name: the name it was created under (``mlpot``).
        modelPath: path to the model file (see :mod:`mlpot.deploy`).
    """

    def __init__(self, name: str, modelPath: str):
        self.name = name
        self.modelPath = modelPath

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Optional[Iterable[int]],
        forceGroup: int,
        **args,
    ):
        """Add one TorchForce acting on ``atoms`` (all particles when ``None``) in ``forceGroup``."""
        from mlpot.plugins.openmm import create_force, refuse_copy

        if system.getNumParticles() == 0:
            # openmm-ml builds ML terms in an empty System only to deep-copy them into a CustomCVForce
            # (createMixedSystem(interpolate=True)), which crashes openmm-torch 1.5: say so instead.
            refuse_copy(None)
        force = create_force(self.modelPath, topology, atoms=atoms)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """mlpot models are strictly local (finite cutoff)."""
        return False
