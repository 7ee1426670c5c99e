"""The job service every dialect uses; the API process's composition root, admission, changes, retention."""
