"""hypothesis profiles for the fault tests: ``ci`` (default, bounded) and ``long`` (FEDMTL_FUZZ=long)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("long" if os.environ.get("FEDMTL_FUZZ") == "long" else "ci")
