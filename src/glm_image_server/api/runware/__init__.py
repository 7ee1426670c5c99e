"""The Runware dialect at `/v1`: REST (a JSON array of tasks per POST) and WebSocket on the same path."""
