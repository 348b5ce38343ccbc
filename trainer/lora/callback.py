"""corral's events from inside mlx-lm's train(): a TrainingCallback, and the probe that gives each rank its own loss.

Imports mlx and mlx-lm at module level: only trainer/lora/run.py imports this, inside a function.

Why a probe: mlx-lm's callback only gets the loss averaged over every rank (it all_sums its local sum before
reporting), but a step event carries this rank's own loss. mlx-lm compiles its training step with
``mx.compile(inputs=state, outputs=state)`` where ``state`` starts with ``model.state``, the model's whole
array tree; arrays in it that the step assigns are returned by the compiled function like updated weights.
So ``LocalLoss`` is a frozen submodule of the model (in ``model.state``, never in the trainable parameters,
the gradients or the saved adapters), and the loss function given to train() stores its value and token
count there. After each step mlx-lm evaluates ``state``, so reading them costs nothing extra and the step
stays compiled. Reporting every step (steps_per_report=1) turns mlx-lm's report into the per-step global
mean and step time. The alternatives were worse: a second forward pass per step, or mx.disable_compile().
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import default_loss

from trainer.events import CheckpointEvent, EvalEvent, EventWriter, NodeEvent, StepEvent
from trainer.lora.adapters import save_adapters
from trainer.system import ProcessMemory, host_memory, load_1m

PROBE_NAME = "corral_local_loss"


class LocalLoss(nn.Module):
    """This rank's loss and target-token count of the last training step, written by ``probed_loss``."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = mx.array(0.0, dtype=mx.float32)
        self.tokens = mx.array(0, dtype=mx.int32)
        self.freeze()


def attach_probe(model: nn.Module) -> LocalLoss:
    probe = LocalLoss()
    setattr(model, PROBE_NAME, probe)
    return probe


def detach_probe(model: nn.Module) -> None:
    if PROBE_NAME in model:
        del model[PROBE_NAME]


def probed_loss(loss: Callable = default_loss) -> Callable:
    """mlx-lm's loss function, also storing its value in the model's LocalLoss while training (not in evaluate)."""

    def loss_and_probe(model: nn.Module, *batch: Any) -> tuple[mx.array, mx.array]:
        value, tokens = loss(model, *batch)
        if model.training:
            probe = getattr(model, PROBE_NAME)
            probe.loss = mx.stop_gradient(value).astype(mx.float32)
            probe.tokens = mx.stop_gradient(tokens).astype(mx.int32)
        return value, tokens

    return loss_and_probe


class NodeReporter:
    """Host memory and load as a node event, at most every ``every_s`` seconds."""

    def __init__(self, writer: EventWriter, every_s: float) -> None:
        self.writer = writer
        self.every_s = every_s
        self.host = socket.gethostname()
        self._next = 0.0

    def if_due(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        used, total = host_memory()
        self.writer.emit(NodeEvent, host=self.host, ram_used_bytes=used, ram_total_bytes=total, load_1m=load_1m())


class EventCallback(TrainingCallback):
    """Turns mlx-lm's reports into step, eval and checkpoint events; rank 0 also saves the adapters."""

    def __init__(self, writer: EventWriter, model: nn.Module, probe: LocalLoss, *, first_step: int, last_step: int,
                 batches_per_epoch: int, save_every: int, adapter_dir: Path, rank: int, nodes: NodeReporter) -> None:
        self.writer = writer
        self.model = model
        self.probe = probe
        self.first_step = first_step  # steps done before this run (a resume); mlx-lm counts from 1 again
        self.last_step = last_step
        self.batches_per_epoch = max(1, batches_per_epoch)
        self.save_every = save_every
        self.adapter_dir = adapter_dir
        self.rank = rank
        self.nodes = nodes
        self.memory = ProcessMemory()
        self.tokens = 0
        self.step = first_step
        self.saved_step: int | None = None

    def on_train_loss_report(self, train_info: dict) -> None:
        self.step = step = self.first_step + int(train_info["iteration"])
        step_tokens = int(self.probe.tokens.item())
        self.tokens += step_tokens
        # steps_per_report is 1, so mlx-lm's iterations per second is this step's rate (evaluation excluded).
        step_time_s = 1.0 / train_info["iterations_per_second"] if train_info["iterations_per_second"] else None
        self.writer.emit(
            StepEvent,
            step=step,
            loss=self.probe.loss.item(),
            loss_mean=float(train_info["train_loss"]),
            learning_rate=float(train_info["learning_rate"]),
            step_time_s=step_time_s,
            tokens_per_s=step_tokens / step_time_s if step_time_s else None,
            tokens=self.tokens,
            epoch=(step - 1) // self.batches_per_epoch,
            mlx_active_bytes=mx.get_active_memory(),
            mlx_peak_bytes=mx.get_peak_memory(),
            mlx_cache_bytes=mx.get_cache_memory(),
            rss_bytes=self.memory.rss_bytes(),
        )
        if step == self.last_step or (self.save_every and step % self.save_every == 0):
            self.save(step)
        self.nodes.if_due()

    def on_val_loss_report(self, val_info: dict) -> None:
        # mlx-lm evaluates before step `iteration + 1`, i.e. after `iteration` updates.
        self.writer.emit(EvalEvent, step=self.first_step + int(val_info["iteration"]),
                         val_loss=float(val_info["val_loss"]), eval_time_s=float(val_info["val_time"]))

    def save(self, step: int) -> None:
        self.saved_step = step
        if self.rank != 0:
            return
        started = time.perf_counter()
        weights = dict(tree_flatten(self.model.trainable_parameters()))
        path, size = save_adapters(self.adapter_dir, weights, step)
        self.writer.emit(CheckpointEvent, step=step, path=str(path), size_bytes=size,
                         save_time_s=time.perf_counter() - started)

    def close(self) -> None:
        self.memory.close()
