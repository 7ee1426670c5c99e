"""`python -m glm_image_server.cli`: how the supervisor starts a worker process with this interpreter."""

import sys

from . import main

sys.exit(main())
