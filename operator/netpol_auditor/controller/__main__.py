"""``python -m netpol_auditor.controller [options]`` = ``netpol-auditor run [options]``."""

import sys

from netpol_auditor.controller.command import main

sys.exit(main())
