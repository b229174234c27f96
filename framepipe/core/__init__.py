"""The stage-agnostic core: names, settings, messages, the bus and the runner.

It imports nothing else of framepipe (an import-linter contract in `make lint`)."""
