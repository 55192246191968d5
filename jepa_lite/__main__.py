"""`python -m jepa_lite ...` is the `jepa-lite` command; torchrun needs this form:

    torchrun --standalone --nproc_per_node=2 -m jepa_lite train --data shapes --steps 2000 --out runs/ddp
"""
import sys

from jepa_lite.cli import main

sys.exit(main())
