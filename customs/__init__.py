"""Customs clearance back office: service layer, settings, CLI and tools.

The domain lives in ``models/`` (tables, document schema, state machine),
``tasks/`` (the clearance steps) and ``flows/`` (orchestration).
"""

import os
from pathlib import Path

# No internet here, and a customs back office phones home to nobody: Prefect's server analytics stay off
# unless explicitly switched on.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
