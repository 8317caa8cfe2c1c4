"""Engine adapters for mlpot models (imported as ``mlpot.plugins``): ASE, OpenMM, openmm-ml.

Each adapter loads a model file through :func:`mlpot.deploy.load_model` and converts the engine's
units with :mod:`mlpot.units`; none of them re-implements the model or its neighbour list.
"""
