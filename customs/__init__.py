"""Customs clearance back office: service layer, settings, CLI and tools.

The domain lives in ``models/`` (tables, document schema, state machine),
``tasks/`` (the clearance steps) and ``flows/`` (orchestration).
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
