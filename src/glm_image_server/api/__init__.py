"""HTTP dialects: each module translates one public API to and from the job records."""
