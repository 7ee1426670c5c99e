"""glm-image-server: self-hosted GLM-Image behind the fal, Runware and OpenAI APIs."""

__version__ = "0.1.0"
