"""`python -m longyarn` runs the `longyarn` command."""

import sys

from longyarn.app.cli import main

sys.exit(main())
