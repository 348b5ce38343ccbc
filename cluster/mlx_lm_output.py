"""Read ``mlx_lm.lora``'s console lines as corral events, for runs of mlx-lm's own trainer that emit none.

Two formats exist. mlx-lm up to 0.31 prints sentences on every rank::

    Iter 10: Train loss 2.345, Learning Rate 1.000e-05, It/sec 0.512, Tokens/sec 123.4, Trained Tokens 1234, Peak mem 1.234 GB
    Iter 10: Val loss 2.301, Val took 1.234s
    Iter 100: Saved adapter weights to adapters/adapters.safetensors and adapters/0000100_adapters.safetensors.

mlx-lm 0.32 prints a table through ``rich`` on rank 0 only (``mlx_lm/cli_ui.py``, ``TrainUI``), coloured,
and on a terminal mixed with its progress bar's redraws (``\\r``, cursor movements)::

      iter   train_loss     tok/s     tokens
        10    5.712 ▼    12,345      5.1k
        10    val 5.402    0.12s
      save  0000015_adapters.safetensors

What the lines give: the loss is the mean over every rank (mlx-lm all-sums it), so a step event carries it as
both ``loss`` and ``loss_mean``; validation runs before step N's update, so it is the loss after step N - 1, as
mlx-lm's own callback reports it. A line that is cut, interleaved or otherwise not exactly one of these is no
event (None): it stays plain text.
"""

from __future__ import annotations

import re

from trainer.events import CheckpointEvent, EvalEvent, Event, StepEvent

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_NUMBER = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

# --- mlx-lm up to 0.31 -----------------------------------------------------------------------------
_ITER = re.compile(r"^Iter (\d+): (.*)$")
# "Key value" parts of a train line, each with its exact value shape (a cut value or key matches none).
_TRAIN_PARTS = {
    "Train loss": re.compile(rf"^Train loss ({_NUMBER})$"),
    "Learning Rate": re.compile(rf"^Learning Rate ({_NUMBER})$"),
    "It/sec": re.compile(rf"^It/sec ({_NUMBER})$"),
    "Tokens/sec": re.compile(rf"^Tokens/sec ({_NUMBER})$"),
    "Trained Tokens": re.compile(r"^Trained Tokens (\d+)$"),
    "Peak mem": re.compile(rf"^Peak mem ({_NUMBER}) GB$"),
}
_OLD_VAL = re.compile(rf"^Val loss ({_NUMBER}), Val took ({_NUMBER})s$")
_OLD_SAVE = re.compile(r"^Saved adapter weights to (.+?) and (.+?)\.$")

# --- mlx-lm 0.32 (TrainUI rows, colours stripped) ------------------------------------------------
_NEW_TRAIN = re.compile(rf"^ +(\d+) +({_NUMBER}) [▼▲] +([\d,]+) +({_NUMBER})k *$")
_NEW_VAL = re.compile(rf"^ +(\d+) +val +({_NUMBER}) +({_NUMBER})s *$")
_NEW_SAVE = re.compile(r"^ +save +(\S*?(\d{7})_adapters\.safetensors) *$")

GB = 1e9  # mlx-lm divides bytes by 1e9 for "Peak mem"


def parse_mlx_lm_line(text: str, *, rank: int, time: float) -> Event | None:
    """The event an ``mlx_lm.lora`` console line means, or None when it is not exactly one of its report lines."""
    if "\x1b" in text or "\r" in text:
        # A terminal line: any \r-separated part may hold the row (the rest is the progress bar's redraw).
        for part in reversed(_ANSI.sub("", text).split("\r")):
            event = _parse_plain(part.rstrip("\n"), rank, time)
            if event is not None:
                return event
        return None
    return _parse_plain(text.rstrip("\n"), rank, time)


def _parse_plain(text: str, rank: int, time: float) -> Event | None:
    match = _ITER.match(text)
    if match:
        return _parse_old(int(match.group(1)), match.group(2), rank, time)
    match = _NEW_TRAIN.match(text)
    if match:
        loss = float(match.group(2))
        return StepEvent(rank=rank, time=time, step=int(match.group(1)), loss=loss, loss_mean=loss,
                         tokens_per_s=float(match.group(3).replace(",", "")),
                         tokens=int(round(float(match.group(4)) * 1000)))
    match = _NEW_VAL.match(text)
    if match:
        return EvalEvent(rank=rank, time=time, step=max(0, int(match.group(1)) - 1), val_loss=float(match.group(2)),
                         eval_time_s=float(match.group(3)))
    match = _NEW_SAVE.match(text)
    if match:
        return CheckpointEvent(rank=rank, time=time, step=int(match.group(2)), path=match.group(1))
    return None


def _parse_old(step: int, rest: str, rank: int, time: float) -> Event | None:
    if rest.startswith("Train loss "):
        values: dict[str, str] = {}
        for part in rest.split(", "):
            key = next((key for key in _TRAIN_PARTS if part.startswith(key + " ")), None)
            found = _TRAIN_PARTS[key].match(part) if key is not None else None
            if found is None or key in values:
                return None
            values[key] = found.group(1)
        loss = float(values["Train loss"])
        it_per_s = float(values["It/sec"]) if "It/sec" in values else None
        return StepEvent(
            rank=rank, time=time, step=step, loss=loss, loss_mean=loss,
            learning_rate=float(values["Learning Rate"]) if "Learning Rate" in values else None,
            step_time_s=1.0 / it_per_s if it_per_s else None,
            tokens_per_s=float(values["Tokens/sec"]) if "Tokens/sec" in values else None,
            tokens=int(values["Trained Tokens"]) if "Trained Tokens" in values else None,
            mlx_peak_bytes=int(float(values["Peak mem"]) * GB) if "Peak mem" in values else None,
        )
    match = _OLD_VAL.match(rest)
    if match:
        return EvalEvent(rank=rank, time=time, step=max(0, step - 1), val_loss=float(match.group(1)),
                         eval_time_s=float(match.group(2)))
    match = _OLD_SAVE.match(rest)
    if match:
        return CheckpointEvent(rank=rank, time=time, step=step, path=match.group(2))
    return None


__all__ = ["parse_mlx_lm_line"]
