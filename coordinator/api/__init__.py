"""HTTP handlers: operator API, agent protocol and the open system endpoints."""
