"""Code that runs inside Slurm jobs. Never imports mlps_slurm.cli."""
