"""What a run keeps and guards across processes and restarts: checkpoints, the run folder and its lock, preemption
and the divergence guard. Restoring a loop from a checkpoint is the run's job (gsam.run.resume)."""
