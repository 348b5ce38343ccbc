"""A tiny Llama model (random weights, tokenizer trained offline) and a learnable JSONL set for LoRA tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here with the ``tokenizers`` library on the
dataset's own sentences, and the weights come from mlx-lm's own Llama class, so ``mlx_lm.load`` accepts the
directory exactly as it would a converted Hugging Face model. Both builders are deterministic and take well
under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

# Short sentences from a few fixed templates: a model sees the same word order again and again, so a LoRA
# on a random 2-layer model brings the loss down within ~30 steps.
_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
_FRUITS = ("apples", "bananas", "cherries", "dates", "figs", "grapes", "lemons", "mangoes")
_PLACES = ("the market", "the garden", "the kitchen", "the park")

EOS_TOKEN = "</s>"
BOS_TOKEN = "<s>"
UNK_TOKEN = "<unk>"

TINY_LLAMA_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


def sentence(index: int) -> str:
    """The index-th training sentence (the same index gives the same sentence everywhere)."""
    name = _NAMES[index % len(_NAMES)]
    fruit = _FRUITS[(index * 3) % len(_FRUITS)]
    place = _PLACES[(index // len(_NAMES)) % len(_PLACES)]
    return f"{name} buys {fruit} at {place}. {name} likes {fruit}."


def make_lora_dataset(dest: Path, n_train: int = 64, n_valid: int = 16) -> Path:
    """``dest`` with train.jsonl and valid.jsonl of ``{"text": ...}`` lines; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, first, count in (("train", 0, n_train), ("valid", n_train, n_valid)):
        lines = [json.dumps({"text": sentence(i)}) for i in range(first, first + count)]
        (dest / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _train_tokenizer(vocab_size: int):
    """A byte-level BPE (GPT-2 style, so mlx-lm picks its BPE streaming detokenizer) trained on the sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((sentence(i) for i in range(256)), trainer=trainer)
    return tokenizer


def _random_llama_weights(config: dict, seed: int) -> dict:
    """Weights named as mlx-lm's Llama names them, initialised like mlx.nn does (mlx_lm.load checks every name
    and shape strictly). Built with MLX alone: importing mlx_lm would cost ~2 s of transformers import here."""
    import mlx.core as mx

    hidden, inner = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    key = mx.random.key(seed)

    def linear(out_dim: int, in_dim: int) -> mx.array:
        nonlocal key
        key, sub = mx.random.split(key)
        bound = in_dim**-0.5
        return mx.random.uniform(-bound, bound, (out_dim, in_dim), key=sub)

    key, sub = mx.random.split(key)
    weights = {
        "model.embed_tokens.weight": mx.random.normal((config["vocab_size"], hidden), key=sub) * hidden**-0.5,
        "model.norm.weight": mx.ones((hidden,)),
    }
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        weights.update({
            prefix + "self_attn.q_proj.weight": linear(hidden, hidden),
            prefix + "self_attn.k_proj.weight": linear(kv, hidden),
            prefix + "self_attn.v_proj.weight": linear(kv, hidden),
            prefix + "self_attn.o_proj.weight": linear(hidden, hidden),
            prefix + "mlp.gate_proj.weight": linear(inner, hidden),
            prefix + "mlp.up_proj.weight": linear(inner, hidden),
            prefix + "mlp.down_proj.weight": linear(hidden, inner),
            prefix + "input_layernorm.weight": mx.ones((hidden,)),
            prefix + "post_attention_layernorm.weight": mx.ones((hidden,)),
        })
    return weights


def make_tiny_llama(dest: Path, seed: int = 0, vocab_size: int = 384) -> Path:
    """``dest`` as a model directory ``mlx_lm.load`` accepts (config, random weights, tokenizer); returns ``dest``."""
    import mlx.core as mx

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    tokenizer.save(str(dest / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN,
        "model_max_length": TINY_LLAMA_CONFIG["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1), encoding="utf-8")

    config = {
        **TINY_LLAMA_CONFIG,
        "vocab_size": tokenizer.get_vocab_size(),
        "bos_token_id": tokenizer.token_to_id(BOS_TOKEN),
        "eos_token_id": tokenizer.token_to_id(EOS_TOKEN),
    }
    (dest / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")

    mx.save_safetensors(str(dest / "model.safetensors"), _random_llama_weights(config, seed), metadata={"format": "mlx"})
    return dest
