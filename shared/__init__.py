"""Wire models and pure helpers shared by the agent and the coordinator.

Runs in both daemons and in the CLI. Imports neither ``agent`` nor ``coordinator``:
job spec, JobStatus, node and agent-protocol models, durations, interpolation,
the clock seam, the error tree and logging setup.
"""
