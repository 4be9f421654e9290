"""`python -m videollm_online ...`: the `videollm-online` command without its console script."""

import sys

from .cli import main

sys.exit(main())
