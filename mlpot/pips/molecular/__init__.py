"""PIPS on molecules with rollouts in OpenMM (nm, ps, kJ/mol): ``integrator``, ``replicas``,
``rollout``, ``peptides``, ``policy``, ``trainer``, ``path_metrics``, ``baselines``, ``report``,
``report_plots``, ``trajectories``. Import the modules themselves (this package imports nothing,
so that OpenMM loads only when a module that needs it does)."""
