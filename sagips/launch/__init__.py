"""Starting the MPI world: locally with mpiexec, on Slurm through submitit, or on PBS."""
