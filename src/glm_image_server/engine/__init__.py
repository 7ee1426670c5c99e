"""The GLM-Image runtime: loading, the tiny offline model, and the engine. Knows nothing of HTTP."""
