"""File names and tags shared by the record, the card and the Hub I/O."""

CONFIG_NAME = "fcr_config.json"
CARD_NAME = "README.md"
SAFE_WEIGHTS_NAME = "model.safetensors"
HEAD_EDITS_NAME = "fcr_head.safetensors"  # the tensors of head-level edits (see head_edit.py)
# a folder holding one of these is a full checkpoint; one holding only CONFIG_NAME is an edits-only artifact
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "model.safetensors.index.json",
)
TAGS = ("hf-fcr", "model-editing")
LIBRARIES = ("timm", "transformers", "pytorch")
