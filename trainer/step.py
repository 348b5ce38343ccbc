"""The training and eval steps: gradients averaged across ranks with `average_gradients` inside one compiled step."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from trainer.model import loss_fn


class TrainStep:
    """One optimizer step over this rank's micro batches; returns (this rank's loss, the mean over ranks).

    With one micro batch, forward, backward, gradient averaging, clipping, the update and the global
    loss are one compiled graph and one ``mx.eval``: the mean loss rides along with the gradients'
    all_sum, so it adds no extra synchronisation with the host. With accumulation, each micro batch's
    gradients are evaluated as they come (that is the memory saving) and the update is a second
    compiled function.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, grad_clip: float, world_size: int, compile: bool = True) -> None:
        self.model = model
        self.optimizer = optimizer
        self.state = [model.state, optimizer.state, mx.random.state]
        loss_and_grad = nn.value_and_grad(model, loss_fn)
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
            loss, grads = loss_and_grad(model, inputs, targets)
            return finish(loss, grads)

        def apply(loss_sum: mx.array, grad_sum: Any, count: int) -> tuple[mx.array, mx.array]:
            return finish(loss_sum / count, tree_map(lambda g: g / count, grad_sum))

        self._fused = wrap(fused)
        micro = lambda inputs, targets: loss_and_grad(model, inputs, targets)  # noqa: E731
        # value_and_grad swaps the model's parameters while tracing, so the model state is an output too.
        self._micro = mx.compile(micro, inputs=model.state, outputs=model.state) if compile else micro
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

    def __init__(self, model: nn.Module, world_size: int, compile: bool = True) -> None:
        self.world_size = world_size
        self._loss = mx.compile(partial(loss_fn, model), inputs=model.state) if compile else partial(loss_fn, model)

    def __call__(self, micro_batches: list[tuple[mx.array, mx.array]]) -> float:
        total = mx.array(0.0)
        for inputs, targets in micro_batches:
            total = total + self._loss(inputs, targets)
            mx.eval(total)
        count = mx.array(float(len(micro_batches)))
        if self.world_size > 1:
            total, count = mx.distributed.all_sum(total), mx.distributed.all_sum(count)
        return (total / mx.maximum(count, 1.0)).item()
