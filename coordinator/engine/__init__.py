"""The rollout engine: a pure planner and the thin loops that feed it and apply its plans."""
