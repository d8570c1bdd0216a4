"""The Fleetwave coordinator: HTTP API, store, rollout engine and the operator CLI.

Runs as the ``fleetwave coordinator`` daemon (aiohttp) on one or more control hosts;
the CLI in ``coordinator.cli`` runs on operators' machines and only speaks HTTP.
"""
