"""The studio: an interactive page (Gradio) over the library's public API. ``hf-fcr studio`` serves it;
``spaces/studio/app.py`` is the same app as a Hugging Face Space. ``StudioSession`` (no Gradio needed) holds what the
page shows; ``build_app`` / ``launch`` need the ``[studio]`` extra."""

from __future__ import annotations

from typing import Any

from .session import DEMO, StudioSession, StudioSource

# The page needs gradio (the [studio] extra): it is imported when the page is built.

__all__ = ["DEMO", "StudioSession", "StudioSource", "build_app", "launch"]


def build_app(*args: Any, **kwargs: Any) -> Any:
    """``studio.app.build_app`` (imports Gradio)."""
    from .app import build_app as build

    return build(*args, **kwargs)


def launch(*args: Any, **kwargs: Any) -> Any:
    """``studio.app.launch`` (imports Gradio)."""
    from .app import launch as serve

    return serve(*args, **kwargs)
