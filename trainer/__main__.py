"""`python -m trainer`: runs the trainer the config's ``kind`` names (trainer/train.py, or trainer/lora for mlx-lm LoRA)."""

import os
import sys

from trainer.blas import BlasError, use_blas
from trainer.config import BLAS_DEFAULT, BLAS_KEY, ConfigError, config_kind, peek_setting
from trainer.events import ErrorEvent, EventWriter


def main() -> int:
    argv = sys.argv[1:]
    try:
        kind = config_kind(argv)
        # Before anything imports MLX: its matmuls bind to the BLAS loaded now (trainer/blas.py).
        blas, where = peek_setting(argv, BLAS_KEY) or (BLAS_DEFAULT, "")
        try:
            use_blas(str(blas))
        except BlasError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
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
