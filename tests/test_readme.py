"""The README's Python snippets run as written, in order, in one namespace, on the built-in SpuriousDigits and the
ERM model the first README command writes (trained here, for fewer epochs), from a fresh working folder."""

import re
from pathlib import Path

import pytest

from hf_fcr.demo.erm import spurious_digits_erm
from hf_fcr.fitting import methods

pytestmark = pytest.mark.slow  # trains the demo's ERM model and runs the search, the diagnosis and auto

ROOT = Path(__file__).resolve().parents[1]


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def registry():
    """The README registers a method: the registry is restored afterwards."""
    before = dict(methods._REGISTRY)
    yield
    methods._REGISTRY.clear()
    methods._REGISTRY.update(before)


def test_every_readme_snippet_runs(tmp_path, monkeypatch, registry):
    snippets = _snippets()
    assert len(snippets) >= 3, "the README lost its snippets"
    spurious_digits_erm(tmp_path / "outputs" / "demo", epochs=3, log=lambda *a: None)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
    assert (tmp_path / "outputs" / "fcr" / "fcr_config.json").is_file()
    assert (tmp_path / "outputs" / "fixed" / "fcr_config.json").is_file()
    assert (tmp_path / "outputs" / "diagnosis.png").stat().st_size > 0
    assert "ridge" in namespace["hf_fcr"].head_method_names()
