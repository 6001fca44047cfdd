"""``python -m spikemlp`` (and ``torchrun -m spikemlp``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
