"""Sample speech clips bundled with the package, with their reference transcripts.

The clips are short everyday English sentences that the project synthesises itself
(``scripts/make_samples.sh``: espeak-ng Klatt voices, 16 kHz mono 16-bit WAV), so
notebooks, docs and tests have real audio to transcribe without any download.
``samples.tsv`` beside them maps each file to the sentence spoken; it is the index
every function here reads, in its order.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import importlib.resources
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_samples", "sample_paths", "sample_references"]

_INDEX = "samples.tsv"

# Keeps the samples extracted for the life of the process when the package is not
# installed as plain files (e.g. imported from a zip); created on first need.
_extracted: contextlib.ExitStack | None = None


def _samples_dir() -> Path:
    """Return the directory that holds the bundled clips, as a real path."""
    global _extracted
    resource = importlib.resources.files("phaseo_notebook").joinpath("data", "samples")
    if isinstance(resource, Path):
        return resource
    if _extracted is None:
        _extracted = contextlib.ExitStack()
        atexit.register(_extracted.close)
    return _extracted.enter_context(importlib.resources.as_file(resource))


def _read_index() -> list[tuple[str, str]]:
    """Return ``(file, reference)`` rows of ``samples.tsv``, in file order."""
    text = (_samples_dir() / _INDEX).read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text), delimiter="\t")
    return [(row["file"], row["reference"]) for row in rows]


def sample_paths() -> list[Path]:
    """Return the paths of the bundled sample clips.

    Returns
    -------
    list of pathlib.Path
        One 16 kHz mono WAV per sample, in the order of ``samples.tsv``.

    Examples
    --------
    >>> paths = sample_paths()
    >>> paths[0].name, paths[0].suffix
    ('numbers.wav', '.wav')
    """
    directory = _samples_dir()
    return [directory / name for name, _ in _read_index()]


def sample_references() -> dict[str, str]:
    """Return the sentence spoken in each bundled clip.

    Returns
    -------
    dict of str to str
        File name (e.g. ``"numbers.wav"``) to its reference transcript: lowercase
        words separated by single spaces.

    Examples
    --------
    >>> sample_references()["numbers.wav"]
    'one two three four five'
    """
    return dict(_read_index())


def load_samples() -> pd.DataFrame:
    """Return the bundled clips as a DataFrame, ready for ``df.stt.transcribe``.

    Returns
    -------
    pandas.DataFrame
        One row per clip, with columns ``audio`` (path as ``str``), ``reference``
        (the sentence spoken) and ``file`` (the file name).

    Examples
    --------
    >>> df = load_samples()
    >>> list(df.columns)
    ['audio', 'reference', 'file']
    >>> df.loc[0, "reference"]
    'one two three four five'
    """
    # Imported here: pandas is heavy, and the other helpers must not need it.
    import pandas as pd

    directory = _samples_dir()
    rows = _read_index()
    return pd.DataFrame(
        {
            "audio": [str(directory / name) for name, _ in rows],
            "reference": [reference for _, reference in rows],
            "file": [name for name, _ in rows],
        }
    )
