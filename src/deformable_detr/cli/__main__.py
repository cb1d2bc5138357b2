"""`python -m deformable_detr.cli`: the same as the `deformable-detr` command (torchrun uses this)."""

import sys

from deformable_detr.cli import main

sys.exit(main())
