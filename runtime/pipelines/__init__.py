"""Task pipelines over component graphs (no torch, no runtime-specific code)."""
