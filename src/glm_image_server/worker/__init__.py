"""A worker process: claims batches from the store, runs the engine and the post stage, reports events."""
