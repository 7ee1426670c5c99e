"""The fal.ai dialect: `fal-ai/glm-image` and `fal-ai/glm-image/image-to-image`, sync and queued."""
