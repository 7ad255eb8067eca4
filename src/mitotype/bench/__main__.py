"""``python -m mitotype.bench --train-worker SPEC``: one training row's worker process (``bench.training``)."""

import json
import sys

from mitotype.bench.training import train_worker

if len(sys.argv) == 3 and sys.argv[1] == "--train-worker":
    print(json.dumps(train_worker(json.loads(sys.argv[2]))))
else:
    sys.exit("usage: mitotype bench [--quick] (this module's own entry point is for its training workers)")
