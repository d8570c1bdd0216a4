"""The Fleetwave node agent: runs on every host, pulls its job assignments and supervises them.

Installed as the ``fleetwave-agent`` systemd service (or started as ``python -m agent``). It
registers with the coordinator, long-polls its assignments, reconciles local processes to
them, checks their health and reports back. Imports only ``shared``, never ``coordinator``.
"""
