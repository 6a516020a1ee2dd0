"""A separate process that checks and registers declarations (used by test_postgres.py).

Usage: python tests/pg_register_worker.py IDS_FILE SEED   (settings come from CUSTOMS_* variables)
"""

import json
import random
import sys

from customs.services.steps import register_declaration
from customs.services.steps import check_signatures

ids = json.loads(open(sys.argv[1]).read())
random.Random(int(sys.argv[2])).shuffle(ids)
acted = 0
for application_id in ids:
    check_signatures(application_id)
    acted += register_declaration(application_id).acted
print(json.dumps({"acted": acted}))
