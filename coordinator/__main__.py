"""``python -m coordinator``: the coordinator daemon (same as ``fleetwave coordinator``)."""

from coordinator.cli import main

main(["coordinator", *__import__("sys").argv[1:]])
