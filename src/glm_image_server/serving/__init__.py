"""The job service (no HTTP): what every dialect does with jobs, over the store; and the API process's
composition root, admission, change feed and retention."""
