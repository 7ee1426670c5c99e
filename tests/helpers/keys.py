"""API keys the test servers are started with."""

FAL_KEY = "test-key-123"  # the TLS fal server (helpers.fal_env)
PLAIN_KEY = "plain-key-456"  # the plain-HTTP server with default URL rules
RUNWARE_KEY = "runware-key-789"  # the Runware server
RUNWARE_OTHER_KEY = "runware-other-key-012"  # another tenant of the Runware server
