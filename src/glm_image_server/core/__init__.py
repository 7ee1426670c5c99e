"""The shared language of every layer: requests, results, jobs, events and how jobs move between states.
Imports nothing else of the project, so any layer may import it."""
