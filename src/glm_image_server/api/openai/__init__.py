"""OpenAI's Images API (generations and edits, plain or streamed), registered as one dialect."""

from __future__ import annotations

from ..dialect import Dialect
from . import routes
from .protocol import API, PREFIX, error_response
from .translate import FIELDS

dialect = Dialect(
    name=API,
    routers=(routes.router,),
    prefixes=(PREFIX,),
    wrong_key="Incorrect API key provided.",
    error=error_response,
    fields=FIELDS,
)
