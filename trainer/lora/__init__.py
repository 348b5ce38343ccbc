"""LoRA fine-tuning with mlx-lm (config ``kind = "lora"``): config and plan use the standard library, the runner mlx-lm."""
