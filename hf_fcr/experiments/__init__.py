"""The research harness, kept out of the library: ERM training (``erm``), method comparison with FCR's controls
and the head-level fixes (``compare``; DFR itself is the library's ``retrain``), the paper's class-removal
experiments (``removal``), the offline demo (``demo``), what the recipes share (``recipe``) and the speed benchmark
(``speed``: ``python -m hf_fcr.experiments.speed``).

Nothing in the library imports from here; ``hf-fcr demo`` and ``recipes/`` do.
"""
