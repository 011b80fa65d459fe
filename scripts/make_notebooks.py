"""Write the example notebooks in ``notebooks/`` from the cell sources below.

The notebooks are generated, not edited by hand, so that they are reviewable as code and
committed without outputs: every cell has a fixed id, no outputs and no execution count.
They run top to bottom on a fresh machine with no API key (the embedded ``local/*``
engines), and each has a clearly marked cell where a real gateway key and model go.

Usage::

    python scripts/make_notebooks.py          # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check  # exit 1 if a committed notebook is stale

Examples
--------
>>> sorted(build_notebooks())  # doctest: +SKIP
['labeling_pipeline.ipynb', 'model_comparison.ipynb', 'quickstart.ipynb']
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"

# nbformat has no type hints; these names keep the untyped calls in one place.
_v4: Any = nbformat.v4
_writes: Any = nbformat.writes

_KERNEL_METADATA: dict[str, Any] = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}

# The marked cell, shared by every notebook: where a real key and model go.
_GATEWAY_MD = """\
## ▶ Using a real gateway (optional)

Everything below runs offline with the embedded engine: no key, no network. To send the
same audio to the speech-to-text gateway instead, set `PHASEO_API_KEY` in the environment
before starting Jupyter (or uncomment the line in the next cell) and choose a gateway model
such as `openai/whisper-1`. Nothing else in the notebook changes."""


def _md(text: str) -> tuple[str, str]:
    return ("markdown", textwrap.dedent(text).strip("\n"))


def _code(text: str) -> tuple[str, str]:
    return ("code", textwrap.dedent(text).strip("\n"))


def _notebook(stem: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb: nbformat.NotebookNode = _v4.new_notebook(metadata=dict(_KERNEL_METADATA))
    for i, (kind, source) in enumerate(cells):
        make = _v4.new_markdown_cell if kind == "markdown" else _v4.new_code_cell
        # Fixed ids: regenerating gives byte-identical files, and diffs show real changes.
        nb.cells.append(make(source, id=f"{stem.replace('_', '-')}-{i:02d}"))
    return nb


def quickstart() -> nbformat.NotebookNode:
    """Column in, text out, rerun from the cache, score against references."""
    return _notebook(
        "quickstart",
        [
            _md(
                """
                # Quickstart: a column of audio in, a column of text out

                `import phaseo_notebook` adds a `.stt` accessor to every pandas DataFrame.
                `df.stt.transcribe(col=...)` sends each distinct clip once, many at a time,
                and keeps every finished transcript in a local cache, so running a cell
                again costs nothing.

                This notebook needs no API key: with no gateway configured, `local/*`
                models run inside this process (PocketSphinx, from
                `pip install 'phaseo-notebook[local]'`).
                """
            ),
            _code(
                """
                import time

                import phaseo_notebook as pn

                df = pn.load_samples()  # short English clips bundled with the package
                df
                """
            ),
            _md(_GATEWAY_MD),
            _code(
                """
                import os

                # os.environ["PHASEO_API_KEY"] = "..."  # <- your gateway key goes here
                if os.environ.get("PHASEO_API_KEY"):
                    MODEL = "openai/whisper-1"  # <- a gateway model
                else:
                    MODEL = "local/whisper-tiny.en"  # offline, in this process
                MODEL
                """
            ),
            _md(
                """
                ## Transcribe a column

                `metadata=True` adds what the gateway reports about each row: whether it
                came from the cache, the provider, the audio duration, the cost, the
                latency, the request id and the language.
                """
            ),
            _code(
                """
                out = df.stt.transcribe(col="audio", model=MODEL, metadata=True)
                out[["file", "reference", "text", "text_cached", "text_duration"]]
                """
            ),
            _md(
                """
                ## Run it again: answered from the cache

                The cache lives in `PHASEO_CACHE_DIR` (default `~/.cache/phaseo-notebook`);
                `phaseo-notebook cache info` shows it from a terminal.
                """
            ),
            _code(
                """
                start = time.perf_counter()
                again = df.stt.transcribe(col="audio", model=MODEL, metadata=True)
                seconds = time.perf_counter() - start
                print(f"{int(again['text_cached'].sum())} of {len(again)} rows from the cache in {seconds:.2f} s")
                assert again["text_cached"].all() and again["text"].equals(out["text"])
                """
            ),
            _md(
                """
                ## How good is it?

                `df.stt.score` compares the transcript with a reference: word error rate
                (WER) and character error rate (CER) per row, and for the whole set (total
                errors over total reference words). Case and punctuation are ignored unless
                you pass `normalize=False`.
                """
            ),
            _code(
                """
                scores = out.stt.score(ref="reference", hyp="text")
                print(f"WER {scores.wer:.1%}, CER {scores.cer:.1%} over {scores.rows} clips")
                scores.df[["file", "reference", "text", "wer"]]
                """
            ),
            _md(
                """
                ## A Series works too

                `series.stt.transcribe()` returns the text aligned with the Series. The same
                audio and model as above, so this comes from the cache as well.
                """
            ),
            _code(
                """
                df["audio"].stt.transcribe(model=MODEL)
                """
            ),
        ],
    )


def labeling_pipeline() -> nbformat.NotebookNode:
    """Transcribe, flag what needs a human, review, export to Label Studio and back."""
    return _notebook(
        "labeling_pipeline",
        [
            _md(
                """
                # Labeling pipeline: transcribe, flag, review, export

                The model's transcript is a first draft. This notebook finds the rows a
                person should check, shows them in a review cell, hands everything to
                Label Studio with the transcript as a prediction, reads the reviewed text
                back, and writes a training file.
                """
            ),
            _code(
                """
                import json
                from pathlib import Path

                import pandas as pd

                import phaseo_notebook as pn

                OUT = Path("outputs")  # files this notebook writes
                OUT.mkdir(exist_ok=True)
                """
            ),
            _md(_GATEWAY_MD),
            _code(
                """
                import os

                # os.environ["PHASEO_API_KEY"] = "..."  # <- your gateway key goes here
                if os.environ.get("PHASEO_API_KEY"):
                    MODEL = "openai/whisper-1"  # <- a gateway model
                else:
                    # Offline, in this process. PocketSphinx transcribes a clip whatever
                    # language it is labelled with and reports the one it used, which is
                    # what the language flag below shows; local/whisper-tiny.en refuses a
                    # non-English label with an error instead (that row would fail).
                    MODEL = "local/pocketsphinx"
                MODEL
                """
            ),
            _md(
                """
                ## Transcribe

                Our metadata says which language each clip is in. One clip is labelled
                French by mistake; the quality flags will catch it, because the gateway
                reports the language it actually transcribed in.
                """
            ),
            _code(
                """
                df = pn.load_samples()
                df["language"] = "en"
                df.loc[df["file"] == "weather.wav", "language"] = "fr"
                out = df.stt.transcribe(
                    col="audio", model=MODEL, language_col="language", metadata=True
                )
                out[["file", "language", "text", "text_language", "text_duration"]]
                """
            ),
            _md(
                """
                ## Flag what needs a human

                `df.stt.flag` marks rows that failed, empty text on audio that has sound
                in it, text far too short or too long for the clip's duration, and a
                reported language different from the one asked for. `needs_review` is True
                where any flag is.
                """
            ),
            _code(
                """
                flagged = out.stt.flag(audio_col="audio", language_col="language")
                print(f"{int(flagged['needs_review'].sum())} of {len(flagged)} rows need review")
                flagged[["file", "text", "needs_review", "review_reasons"]]
                """
            ),
            _md(
                """
                ## Review in the notebook

                Listen, fix the text, accept or reject (Alt+A, Alt+R, Alt+N while the cursor
                is in the cell). The "only needs review" filter starts on, so it shows the
                flagged rows; `review.df` holds the decisions as `text_reviewed` and
                `review_status`.
                """
            ),
            _code(
                """
                review = pn.widgets.review(flagged, audio_col="audio", text_col="text")
                review.only_flagged.value = True
                review
                """
            ),
            _code(
                """
                review.df[["file", "text", "text_reviewed", "review_status"]]
                """
            ),
            _md(
                """
                ## Hand the rows to Label Studio

                `to_label_studio` writes one task per row with the transcript as a
                prediction, for Label Studio's audio transcription template (printed below:
                paste it into the project's *Labeling Interface*). `embed_audio=True` puts
                the clips inside the file so it imports anywhere; for large sets, serve the
                files instead (`local_files_root=`).
                """
            ),
            _code(
                """
                tasks_path = flagged.stt.to_label_studio(
                    OUT / "label_studio_tasks.json",
                    audio_col="audio",
                    text_col="text",
                    data_cols=["file", "review_reasons"],
                    model_version=MODEL,
                    embed_audio=True,
                )
                print(pn.label_studio_config())
                print(f"{len(json.loads(tasks_path.read_text()))} tasks in {tasks_path}")
                """
            ),
            _md(
                """
                ## Read the reviewed text back

                In Label Studio, *Export* > *JSON* gives a file of tasks with their
                annotations. To keep this notebook self-contained, the next cell stands in
                for the annotators: it writes a file shaped like that export, where each
                annotation holds what was actually said.
                """
            ),
            _code(
                """
                spoken = df["reference"].to_dict()
                export = json.loads(tasks_path.read_text())
                for task_id, task in enumerate(export, start=1):
                    task["id"] = task_id
                    task["annotations"] = [
                        {
                            "id": task_id,
                            "completed_by": 1,
                            "was_cancelled": False,
                            "ground_truth": False,
                            "result": [
                                {
                                    "from_name": "transcription",
                                    "to_name": "audio",
                                    "type": "textarea",
                                    "value": {"text": [spoken[task["data"]["row_key"]]]},
                                }
                            ],
                        }
                    ]
                export_path = OUT / "label_studio_export.json"
                export_path.write_text(json.dumps(export), encoding="utf-8")
                print(f"{len(export)} annotated tasks in {export_path}")
                """
            ),
            _code(
                """
                reviewed = flagged.stt.from_label_studio(export_path)
                print(reviewed["review_status"].value_counts().to_dict())
                reviewed[["file", "text", "text_reviewed", "review_status"]]
                """
            ),
            _md(
                """
                The reviewed text is a reference: the model's error rate against it says how
                much correcting the next batch will take.
                """
            ),
            _code(
                """
                print(f"model vs reviewed text: WER {reviewed.stt.score(ref='text_reviewed', hyp='text').wer:.1%}")
                """
            ),
            _md(
                """
                ## Write a training file

                One JSON object per row. Audio given as bytes would be written as data URIs
                (which `df.stt.transcribe` accepts back); paths stay paths.
                """
            ),
            _code(
                """
                train_path = reviewed.stt.to_jsonl(
                    OUT / "train.jsonl", columns=["file", "audio", "text_reviewed", "language"]
                )
                pd.read_json(train_path, lines=True).head()
                """
            ),
        ],
    )


def model_comparison() -> nbformat.NotebookNode:
    """Several models over the same clips: a table and a chart of WER and cost."""
    return _notebook(
        "model_comparison",
        [
            _md(
                """
                # Model comparison on your own audio

                `df.stt.compare` transcribes the same column with each model (one cache and
                one concurrency limit for all of them) and returns one row per model: rows
                done, errors, word and character error rates against a reference, mean
                latency and total cost.
                """
            ),
            _code(
                """
                import pandas as pd

                import phaseo_notebook as pn

                df = pn.load_samples()
                """
            ),
            _md(_GATEWAY_MD),
            _code(
                """
                import os

                # os.environ["PHASEO_API_KEY"] = "..."  # <- your gateway key goes here
                if os.environ.get("PHASEO_API_KEY"):
                    # <- the gateway models to compare
                    MODELS = ["openai/whisper-1", "openai/gpt-4o-mini-transcribe"]
                else:
                    # Offline: the two real recognisers, and a stand-in that returns
                    # random words.
                    MODELS = ["local/whisper-tiny.en", "local/pocketsphinx", "local/fake"]
                MODELS
                """
            ),
            _md(
                """
                ## Compare

                With a `reference` column, each model gets WER and CER (case and punctuation
                ignored). Latency is the mean over requests sent in this run; cost is what
                the gateway reported (the offline engines report 0).
                """
            ),
            _code(
                """
                comparison = df.stt.compare("audio", models=MODELS, reference="reference")
                comparison
                """
            ),
            _code(
                """
                comparison.plot()
                """
            ),
            _md(
                """
                ## Row by row

                `per_row` has one row per (model, clip); `wide()` puts the models side by
                side.
                """
            ),
            _code(
                """
                pd.concat([df[["file", "reference"]], comparison.wide("text")], axis=1)
                """
            ),
            _code(
                """
                comparison.wide("wer").set_axis(df["file"])
                """
            ),
            _md(
                """
                ## Without a reference

                Scoring one model against another shows where they disagree: the clips
                worth listening to first.
                """
            ),
            _code(
                """
                texts = comparison.wide("text")
                agreement = texts.stt.score(ref=MODELS[0], hyp=MODELS[1])
                print(f"{MODELS[1]} vs {MODELS[0]}: WER {agreement.wer:.1%}")
                agreement.df.assign(file=df["file"]).sort_values("wer", ascending=False).head(3)
                """
            ),
            _md(
                """
                ## Adding a model later costs only that model

                Everything already transcribed is in the cache, so running the comparison
                again sends nothing.
                """
            ),
            _code(
                """
                again = df.stt.compare("audio", models=MODELS, reference="reference")
                assert again.table["requests"].sum() == 0
                again.table[["model", "rows", "cached", "requests", "wer"]]
                """
            ),
        ],
    )


def build_notebooks() -> dict[str, nbformat.NotebookNode]:
    """Every notebook, by file name.

    Examples
    --------
    >>> len(build_notebooks()["quickstart.ipynb"].cells) > 0  # doctest: +SKIP
    True
    """
    notebooks = {
        "quickstart.ipynb": quickstart(),
        "labeling_pipeline.ipynb": labeling_pipeline(),
        "model_comparison.ipynb": model_comparison(),
    }
    for nb in notebooks.values():
        nbformat.validate(nb)
    return notebooks


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text written for a notebook.

    Examples
    --------
    >>> render(quickstart()).startswith("{")  # doctest: +SKIP
    True
    """
    text: str = _writes(nb)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the notebooks, or with ``--check`` report the stale ones; returns the exit status.

    Examples
    --------
    >>> main(["--check"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; write nothing")
    parser.add_argument("--dir", type=Path, default=NOTEBOOKS_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, nb in build_notebooks().items():
        path = args.dir / name
        text = render(nb)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            args.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale notebooks (run scripts/make_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
