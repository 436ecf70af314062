from __future__ import annotations

import sys

from embalance.cli import main

sys.exit(main())
