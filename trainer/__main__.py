"""`python -m trainer`: runs the trainer the config's ``kind`` names (trainer/train.py, or trainer/lora for mlx-lm LoRA)."""

import os
import sys

from trainer.config import ConfigError, config_kind
from trainer.events import ErrorEvent, EventWriter


def main() -> int:
    try:
        kind = config_kind(sys.argv[1:])
    except ConfigError as exc:
        # Nothing has parsed the command line yet: the rank comes from the launcher's environment.
        rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))
        EventWriter(int(rank) if rank.isdigit() else 0, sys.stdout).emit(ErrorEvent, message=str(exc))
        return 2
    if kind == "lora":
        from trainer.lora.run import main as run_lora_main

        return run_lora_main()
    from trainer.train import main as run_scratch_main

    return run_scratch_main()


sys.exit(main())
