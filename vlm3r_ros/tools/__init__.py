"""Command-line tools: operator CLIs, replay, evaluation, maps."""
