"""What ``hf-fcr demo`` and ``recipes/`` run on top of the library: ERM training (``erm``), the method comparison
with FCR's controls and the head-level fixes (``compare``; DFR itself is the library's ``retrain``), the paper's
class-removal experiments (``removal``) and MNIST stand-ins (``mnist``), the offline demo (``demo``) and what the
recipes share (``recipe``). The library itself (``hf_fcr.remover`` and below) imports nothing from here; the CLI's
``demo`` subcommand does. The speed benchmark lives outside the package, in ``benchmarks/speed.py``.
"""
