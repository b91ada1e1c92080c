"""Training the Mirage generator (method.md section 5): flow matching, two stages, or the
whole model from scratch (``train_backbone``, the small size: config/train_small.yaml).

Modules:
    config    TrainConfig (typed, checked, YAML/JSON)
    lora      minimal LoRA on the backbone's self-attention q, k, v, o (stage 2)
    readouts  per-clip chunk inputs built exactly as the rollout builds them
    loop      the flow-matching loss, the training loop, checkpoints, resume, FSDP path
    main      ``mirage train`` (main_train) and synthetic clips for --tiny
"""

from mirage_core.train.config import TrainConfig
from mirage_core.train.loop import (
    CheckpointMismatchError,
    NonFiniteLossError,
    TrainResult,
    flow_matching_loss,
    latest_checkpoint,
    prepare_for_training,
    sample_sigma,
    train,
)
from mirage_core.train.lora import LoRALinear, apply_lora, lora_state_dict
from mirage_core.train.main import main_train, synthetic_clips
from mirage_core.train.readouts import ChunkInputs, chunk_inputs, chunk_labels

__all__ = [
    "CheckpointMismatchError",
    "ChunkInputs",
    "LoRALinear",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "apply_lora",
    "chunk_inputs",
    "chunk_labels",
    "flow_matching_loss",
    "latest_checkpoint",
    "lora_state_dict",
    "main_train",
    "prepare_for_training",
    "sample_sigma",
    "synthetic_clips",
    "train",
]
