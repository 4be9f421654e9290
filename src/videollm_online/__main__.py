"""`python -m videollm_online ...`: the `videollm-online` command without its console script."""

import sys

from .apps.cli import main

sys.exit(main())
