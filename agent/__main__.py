"""``python -m agent``: the same entry point as the ``fleetwave-agent`` console script."""

from agent.main import main

if __name__ == "__main__":
    main()
