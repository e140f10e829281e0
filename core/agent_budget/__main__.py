"""``python -m agent_budget``: the command line."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
