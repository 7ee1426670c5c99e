"""The Ray Serve application of a fleet (`pip install glm-image-server[fleet]`); see docs/deploy.md."""
