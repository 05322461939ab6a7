"""The hf-fcr studio as a Hugging Face Space: the built-in demo (SpuriousDigits, trained when the Space starts, about a
minute on a CPU Space), FCR's r on its curve, the diagnosis, the fixes compared, save and push.

Run it locally with ``python app.py`` (or ``hf-fcr studio``); push this folder to a Space (``sdk: gradio``) to run it
there.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from hf_fcr.studio import build_app  # noqa: E402 -- after the environment it reads

demo = build_app()

if __name__ == "__main__":
    demo.launch()
