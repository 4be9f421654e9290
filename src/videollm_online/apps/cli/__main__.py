"""`python -m videollm_online.apps.cli ...`: the `videollm-online` command."""

import sys

from . import main

sys.exit(main())
