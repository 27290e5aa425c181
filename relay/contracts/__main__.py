"""``python -m relay.contracts --check|--release [module ...]``."""

import sys

from .cli import main

sys.exit(main())
