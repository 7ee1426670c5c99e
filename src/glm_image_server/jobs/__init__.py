"""Durable jobs: records, the store, the scheduler that runs them and the webhook outbox."""
