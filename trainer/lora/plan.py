"""The memory one rank needs to LoRA-fine-tune a model, estimated from its config.json and safetensors headers.

Standard library only: corral checks each node before launch without loading the model. The weights part is
exact (the tensors' sizes from the safetensors headers, quantized or not); the adapters part counts mlx-lm's
LoRA matrices on every linear layer of the trained blocks (float32: weights, gradients, their average and
Adam's two moments); the activations part is analytic (what the backward pass keeps through the trained
blocks for a per-rank batch of max_seq_length tokens, plus the float32 logits): 1.04-1.14 × MLX's measured
peak on the CPU (mlx 0.32, mlx-lm 0.32) for hidden 256-512, sequences of 256-512 tokens, with and without
grad_checkpoint.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.lora.config import LoraConfig
from trainer.plan import HEADROOM, parse_size

# Python, MLX, numpy and the tokenizer outside MLX's own allocations (RSS minus MLX's peak: 80-125 MB measured
# on Linux with mlx-lm 0.32; a real tokenizer adds some).
PROCESS_OVERHEAD_BYTES = 256 * 1024**2
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2,
                "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_LAYER_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")


class PlanError(ValueError):
    """The model directory cannot be planned for; the message names the file."""


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def read_safetensors_header(path: Path) -> dict[str, Tensor]:
    """Every tensor's dtype, shape and size in bytes, from the header alone (the first 8 + N bytes of the file)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 1024**2:
                raise PlanError(f"{path} is not a safetensors file (header of {length} bytes)")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        if isinstance(exc, PlanError):
            raise
        raise PlanError(f"cannot read the safetensors header of {path}: {exc}") from None
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = Tensor(info["dtype"], tuple(info["shape"]), end - start)
    return tensors


def _model_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {path}: {exc}; the model directory must hold config.json") from None
    # Multimodal models keep the language model's sizes in text_config.
    return {**config, **config.get("text_config", {})}


def _model_tensors(model_dir: Path) -> dict[str, Tensor]:
    files = sorted(p for p in model_dir.glob("*.safetensors") if not p.name.endswith("adapters.safetensors"))
    if not files:
        raise PlanError(f"{model_dir} has no .safetensors weights (an MLX or Hugging Face safetensors model is needed)")
    tensors: dict[str, Tensor] = {}
    for path in files:
        tensors.update(read_safetensors_header(path))
    return tensors


@dataclass(frozen=True)
class LoraMemoryEstimate:
    """Bytes one rank needs, by part."""

    weights_bytes: int
    adapter_parameters: int
    adapters_bytes: int
    activations_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.adapters_bytes + self.activations_bytes + self.overhead_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "adapter_parameters": self.adapter_parameters,
            "adapters_bytes": self.adapters_bytes,
            "activations_bytes": self.activations_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
        }


def _adapter_parameters(tensors: dict[str, Tensor], trained: set[int], settings: LoraConfig, bits: int) -> int:
    """LoRA (or DoRA) parameters mlx-lm adds to every linear layer of the trained blocks."""
    count = 0
    for name, tensor in tensors.items():
        match = _LAYER_WEIGHT.search(name)
        if not match or int(match.group(1)) not in trained or len(tensor.shape) not in (2, 3):
            continue
        prefix = name[: -len(".weight")]
        if "embed" in match.group(2):
            continue
        *experts, out_dim, in_dim = tensor.shape
        if f"{prefix}.scales" in tensors:  # quantized: `bits`-bit values packed into uint32 words
            in_dim = in_dim * 32 // bits
        per_matrix = settings.lora_rank * (in_dim + out_dim) + (out_dim if settings.fine_tune_type == "dora" else 0)
        count += per_matrix * (experts[0] if experts else 1)
    return count


def estimate_lora(model_dir: Path, settings: LoraConfig, world_size: int | None = None) -> LoraMemoryEstimate:
    """The estimate by part; ``world_size`` (default: expect_world_size, else 1) splits the batch over the ranks."""
    config = _model_config(model_dir)
    tensors = _model_tensors(model_dir)
    try:
        blocks = int(config["num_hidden_layers"])
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{model_dir / 'config.json'} lacks {exc} (needed to estimate memory)") from None
    inner = int(config.get("intermediate_size") or 4 * hidden)
    trained_blocks = blocks if settings.num_layers == -1 else min(settings.num_layers, blocks)
    trained = set(range(blocks - trained_blocks, blocks))
    bits = int((config.get("quantization") or {}).get("bits", 4))
    adapter_parameters = _adapter_parameters(tensors, trained, settings, bits)

    ranks = world_size or settings.expect_world_size or 1
    sequences = max(1, settings.batch_size // ranks)
    tokens = sequences * settings.max_seq_length
    embedding = next((t for n, t in tensors.items() if "embed_tokens" in n and n.endswith(".weight")), None)
    act = 4 if embedding is None or embedding.dtype in ("F32", "U32") else 2  # activations in the compute dtype
    # Kept per trained block for the backward pass: norms, q/k/v/o and residuals (~16 × hidden), the MLP's
    # gate/up/product (~4 × inner), and float32 attention scores and probabilities (the CPU backward of
    # scaled_dot_product_attention materialises them).
    per_block = tokens * (16 * hidden + 4 * inner) * act + 2 * sequences * heads * settings.max_seq_length**2 * 4
    if settings.grad_checkpoint:  # each block's input is kept; one block at a time is recomputed and differentiated
        kept = min(trained_blocks * tokens * hidden * act + 2 * per_block, trained_blocks * per_block)
    else:
        kept = trained_blocks * per_block
    logits = 3 * tokens * vocab * 4  # logits, log-softmax and their gradient in float32
    return LoraMemoryEstimate(
        weights_bytes=sum(t.nbytes for t in tensors.values()),
        adapter_parameters=adapter_parameters,
        adapters_bytes=5 * 4 * adapter_parameters,  # float32: weights, gradients, averaged gradients, Adam's m and v
        activations_bytes=kept + logits,
        overhead_bytes=PROCESS_OVERHEAD_BYTES,
    )


def estimate_lora_memory(model_dir: Path, settings: LoraConfig, world_size: int | None = None) -> int:
    """Bytes one rank needs to fine-tune the model in ``model_dir`` with these settings (see estimate_lora)."""
    return estimate_lora(model_dir, settings, world_size).total_bytes


def lora_plan(settings: LoraConfig, free_memory: str = "") -> dict[str, Any]:
    """`python -m trainer --plan` for a LoRA config: the estimate, and whether it fits HEADROOM of each node's free memory."""
    model_dir = Path(settings.model)
    if not model_dir.is_dir():
        raise PlanError(
            f"model {settings.model} is not a local directory; the plan reads its config.json and safetensors "
            "headers, so download or copy the model first"
        )
    free = [parse_size(part) for part in free_memory.split(",") if part.strip()]
    estimate = estimate_lora(model_dir, settings, len(free) or None)
    budget = int(min(free) * HEADROOM) if free else None
    fits = budget is None or estimate.total_bytes <= budget
    if budget is None:
        message = "no free memory given"
    elif fits:
        message = f"{estimate.total_bytes / 1024**2:.0f} MiB per rank fits in {budget / 1024**2:.0f} MiB"
    else:
        message = (
            f"{estimate.total_bytes / 1024**2:.0f} MiB per rank does not fit in the {budget / 1024**2:.0f} MiB the "
            "tightest node allows; lower batch_size, max_seq_length or num_layers, set grad_checkpoint = true, "
            "or use a quantized model"
        )
    return {
        "kind": "lora",
        "estimate": estimate.as_dict(),
        "free_memory_bytes": free,
        "budget_bytes": budget,
        "fits": fits,
        "message": message,
    }
