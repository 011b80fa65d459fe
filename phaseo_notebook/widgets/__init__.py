"""Notebook cells for speech-to-text: upload-and-transcribe, and review-and-correct.

>>> import phaseo_notebook as pn
>>> up = pn.widgets.upload()  # doctest: +SKIP
>>> rv = pn.widgets.review(up.df, audio_col="audio", save_to="reviews")  # doctest: +SKIP
>>> rv.df  # the final state: one row per input row  # doctest: +SKIP
>>> pn.widgets.read_reviews("reviews")  # the same from disk, one row per item  # doctest: +SKIP

Both are ipywidgets 8 widgets (display them as the last expression of a cell) and thin fronts
over the batch engine; with no API key they use the embedded offline engine. The review
cell's text box and keyboard shortcuts need ``anywidget``
(``pip install 'phaseo-notebook[widgets]'``).
``save_to`` is a directory holding the decision log (one Parquet part per decision, so
``pd.read_parquet`` reads the history); :func:`read_reviews` reads its final state.
"""

from __future__ import annotations

from ._review import SHORTCUTS, ReviewWidget, review
from ._store import read_reviews
from ._upload import UploadWidget, upload

__all__ = ["SHORTCUTS", "ReviewWidget", "UploadWidget", "read_reviews", "review", "upload"]
