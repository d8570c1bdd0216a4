"""The fault-injection suite (issue 15): real processes, seeded faults, invariants.

See docs/reliability.md for the scenarios, their pass rules and how to rerun one.
"""
