"""The outbox: webhook POSTs and upload PUTs of finished jobs, leased and retried by an explicit policy."""
