"""`python -m trainer`: see trainer/train.py for the commands."""

import sys

from trainer.train import main

sys.exit(main())
