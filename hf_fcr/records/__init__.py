"""Records and files: the edit record (config: fcr_config.json, validated as untrusted input), the model card
(card) and loading, saving and pushing checkpoints (hub)."""
