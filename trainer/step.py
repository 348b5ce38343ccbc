"""The training and eval steps: gradients averaged across ranks with `average_gradients` inside one compiled step."""

from __future__ import annotations

import os
from functools import lru_cache, partial
from typing import Any, Callable, Mapping

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from trainer.model import loss_fn

# Set by launchers: how many ranks share this machine (Open MPI, then MPICH/Hydra).
_LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


def cpu_streams(batch_size: int) -> int:
    """How many CPU streams this rank splits each micro batch over: the cores it has, at most one per row.

    MLX runs each CPU stream on one thread, so a plain loop uses one core however many the machine has.
    On a GPU one stream already keeps the device busy.
    """
    if mx.default_device().type != mx.cpu:
        return 1
    machine = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
    return streams_for_cores(batch_size, usable, machine, os.environ)


def streams_for_cores(batch_size: int, usable_cores: int, machine_cores: int, env: Mapping[str, str]) -> int:
    """Streams for a rank allowed on ``usable_cores`` of the machine's ``machine_cores``.

    A rank pinned by its launcher (mpirun binds one or two ranks to one core each) gets its pinned cores;
    an unpinned rank shares the machine's cores with the other ranks the launcher put on this machine.
    """
    cores = usable_cores
    if usable_cores >= machine_cores:
        local = next((int(env[name]) for name in _LOCAL_SIZE_VARIABLES if env.get(name, "").isdigit()), 1)
        cores = machine_cores // max(local, 1)
    return max(1, min(cores, batch_size))


@lru_cache(maxsize=None)
def _shared_cpu_streams(count: int) -> tuple[mx.Stream, ...]:
    """The same ``count`` CPU streams (one thread each) for the train and the eval step."""
    return tuple(mx.new_stream(mx.cpu) for _ in range(count))


def _row_slices(rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, nearly equal row ranges covering ``rows``."""
    edges = [rows * i // parts for i in range(parts + 1)]
    return [(start, stop) for start, stop in zip(edges, edges[1:]) if stop > start]


class _SplitRows:
    """Applies a per-batch function to row slices of a batch on parallel CPU streams and merges the results.

    The loss is a mean over every token and every row has the same length, so the batch's loss (and its
    gradients) is the row-weighted mean of the slices' losses (and gradients).
    """

    def __init__(self, streams: int) -> None:
        self.streams = list(_shared_cpu_streams(streams)) if streams > 1 else []

    def __call__(self, fn: Callable[[mx.array, mx.array], Any], inputs: mx.array, targets: mx.array) -> Any:
        if not self.streams:
            return fn(inputs, targets)
        rows = inputs.shape[0]
        weighted = []
        for stream, (start, stop) in zip(self.streams, _row_slices(rows, len(self.streams))):
            with mx.stream(stream):
                weighted.append(((stop - start) / rows, fn(inputs[start:stop], targets[start:stop])))
        if len(weighted) == 1:
            return weighted[0][1]
        weights = [w for w, _ in weighted]

        def merge(*parts: mx.array) -> mx.array:
            total = weights[0] * parts[0]
            for weight, part in zip(weights[1:], parts[1:]):
                total = total + weight * part
            return total

        return tree_map(merge, *(result for _, result in weighted))


class TrainStep:
    """One optimizer step over this rank's micro batches; returns (this rank's loss, the mean over ranks).

    With one micro batch, forward, backward, gradient averaging, clipping, the update and the global
    loss are one compiled graph and one ``mx.eval``: the mean loss rides along with the gradients'
    all_sum, so it adds no extra synchronisation with the host. With accumulation, each micro batch's
    gradients are evaluated as they come (that is the memory saving) and the update is a second
    compiled function. With ``streams`` > 1 each micro batch's forward and backward run as that many
    slices of rows on parallel CPU streams (see ``cpu_streams``).
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, grad_clip: float, world_size: int,
                 compile: bool = True, streams: int = 1) -> None:
        self.model = model
        self.optimizer = optimizer
        self.state = [model.state, optimizer.state, mx.random.state]
        split = _SplitRows(streams)
        value_and_grad = nn.value_and_grad(model, loss_fn)
        loss_and_grad = lambda inputs, targets: split(partial(value_and_grad, model), inputs, targets)  # noqa: E731
        wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
        wrap = partial(mx.compile, inputs=self.state, outputs=self.state) if compile else (lambda fn: fn)

        def finish(loss: mx.array, grads: Any) -> tuple[mx.array, mx.array]:
            if world_size == 1:
                mean = loss
            elif all(g.dtype == loss.dtype for _, g in tree_flatten(grads)):
                # The loss joins the gradients' one all_sum: the global mean costs no extra collective.
                grads, mean = nn.average_gradients((grads, loss))
            else:  # bfloat16 gradients cannot share a float32 buffer with the loss
                grads, mean = nn.average_gradients(grads), mx.distributed.all_sum(loss) / world_size
            if grad_clip > 0:
                grads, _ = optim.clip_grad_norm(grads, grad_clip)
            optimizer.update(model, grads)
            return loss, mean

        def fused(inputs: mx.array, targets: mx.array) -> tuple[mx.array, mx.array]:
            return finish(*loss_and_grad(inputs, targets))

        def apply(loss_sum: mx.array, grad_sum: Any, count: int) -> tuple[mx.array, mx.array]:
            return finish(loss_sum / count, tree_map(lambda g: g / count, grad_sum))

        self._fused = wrap(fused)
        # value_and_grad swaps the model's parameters while tracing, so the model state is an output too.
        self._micro = mx.compile(loss_and_grad, inputs=model.state, outputs=model.state) if compile else loss_and_grad
        self._apply = wrap(apply)

    def __call__(self, micro_batches: list[tuple[mx.array, mx.array]]) -> tuple[float, float]:
        if len(micro_batches) == 1:
            local, mean = self._fused(*micro_batches[0])
        else:
            loss_sum, grad_sum = None, None
            for inputs, targets in micro_batches:
                loss, grads = self._micro(inputs, targets)
                if grad_sum is None:
                    loss_sum, grad_sum = loss, grads
                else:
                    loss_sum = loss_sum + loss
                    grad_sum = tree_map(mx.add, grad_sum, grads)
                mx.eval(loss_sum, grad_sum)
            local, mean = self._apply(loss_sum, grad_sum, len(micro_batches))
        mx.eval(local, mean, self.state)
        return local.item(), mean.item()


class EvalStep:
    """Mean loss over this rank's held-out micro batches, averaged over every rank's share."""

    def __init__(self, model: nn.Module, world_size: int, compile: bool = True, streams: int = 1) -> None:
        self.world_size = world_size
        split = _SplitRows(streams)
        loss = lambda inputs, targets: split(partial(loss_fn, model), inputs, targets)  # noqa: E731
        self._loss = mx.compile(loss, inputs=model.state) if compile else loss

    def __call__(self, micro_batches: list[tuple[mx.array, mx.array]]) -> float:
        total = mx.array(0.0)
        for inputs, targets in micro_batches:
            total = total + self._loss(inputs, targets)
            mx.eval(total)
        count = mx.array(float(len(micro_batches)))
        if self.world_size > 1:
            total, count = mx.distributed.all_sum(total), mx.distributed.all_sum(count)
        return (total / mx.maximum(count, 1.0)).item()
