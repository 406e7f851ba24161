"""How many generated examples the property tests try: 200 by default, so `make test` stays quick;
`HYPOTHESIS_PROFILE=full make test` tries 2,000.

Each module with property tests imports this before its tests are decorated (a `@settings` copies
the profile's values when it is made). Not in conftest.py: hypothesis takes half a second to
import, which a test process that runs no property test (the xdist controller) need not pay.
"""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=200)
settings.register_profile("full", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
