"""The demo: a local fleet (coordinator + agents as real processes) and a tiny HTTP service."""
