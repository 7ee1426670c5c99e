"""HTTP: the app (app.py) composes the dialects — each subpackage registers one `dialect` (dialect.py) and
translates one public API to and from the job service — with the gate and the server's own endpoints."""
