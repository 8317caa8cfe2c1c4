"""``python -m mlpot.cli`` (and ``torchrun -m mlpot.cli train ...``) runs the ``mlpot`` command."""

import sys

from mlpot.cli import main

sys.exit(main())
