"""After the engine, knowing nothing of jobs: safety check, text check, encode, store; a core result."""
