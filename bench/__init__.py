"""Benchmarks: an agent simulator (thousands of agents in one asyncio process) and scenarios.

Runs on the operator's machine against a real coordinator process; see docs/benchmarks.md.
"""
