"""Jinja templates for the model cards of edited checkpoints (installed as ``hf_fcr.model_cards``)."""
