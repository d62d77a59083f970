"""`python -m interp.cli ...`, the same as `interp ...`."""

import sys

from interp.cli import main

sys.exit(main())
