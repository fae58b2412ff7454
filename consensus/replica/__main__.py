"""``python -m quorumboard.consensus.replica CONFIG``: run one replica process."""

import sys

from quorumboard.consensus.replica.machine import main

sys.exit(main())
