"""Component graphs of each model family: signatures, export-only modules, example inputs."""
