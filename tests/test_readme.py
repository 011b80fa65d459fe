"""The README's Python examples run as written, offline, so the README cannot rot.

Every ```python block of README.md runs, in order, in one fresh interpreter (the README
reads as one session: a later block uses ``out`` from an earlier one), with its working
directory a temporary folder, no API key or gateway configured, and the cache in a
temporary directory. A block that cannot run on one machine says so in an HTML comment on
the line before it (``<!-- readme-test: skip: REASON -->``); the reason is required.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(first line number, code, skip reason or None)`` of each ```python block."""
    blocks: list[tuple[int, str, str | None]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        if fence["lang"] == "python":
            before = lines[i - 1] if i > 0 else ""
            skip = SKIP.match(before)
            blocks.append((start + 1, "\n".join(lines[start:end]), skip and skip["reason"]))
        i = end + 1
    return blocks


def test_python_blocks_are_found() -> None:
    text = (
        "x\n<!-- readme-test: skip: needs a cluster -->\n```python\na = 1\n```\n```bash\nls\n```\n"
    )
    assert python_blocks(text) == [(4, "a = 1", "needs a cluster")]
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    # Only what truly needs outside machinery may be skipped.
    assert [reason for _, _, reason in blocks if reason] == ["needs a Dask cluster"]


RUNNER = """
import sys, traceback
blocks = {blocks!r}
namespace = {{"__name__": "__main__"}}
for line, code in blocks:
    print(f"README.md line {{line}}: running", flush=True)
    exec(compile(code, f"README.md:{{line}}", "exec"), namespace)
print("all README blocks ran", flush=True)
"""


#: What Label Studio's JSON export of the README's tasks holds after one correction; run
#: between the line that writes ``tasks.json`` and the one that reads ``export.json``.
MAKE_EXPORT = """
import json as _json
_task = _json.load(open("tasks.json", encoding="utf-8"))[0]
_json.dump([{"id": 1, "data": _task["data"], "predictions": _task["predictions"],
             "annotations": [{"id": 1, "completed_by": 1, "was_cancelled": False,
                              "updated_at": "2026-01-05T10:00:00Z",
                              "result": [{"from_name": "transcription", "to_name": "audio",
                                          "type": "textarea",
                                          "value": {"text": ["one two three four five"]}}]}]}],
           open("export.json", "w", encoding="utf-8"))
"""
READS_EXPORT = 'reviewed = done.stt.from_label_studio("export.json")'


@pytest.mark.slow
def test_readme_examples_run_offline(tmp_path: Path) -> None:
    blocks = [
        (line, code)
        for line, code, reason in python_blocks(README.read_text(encoding="utf-8"))
        if reason is None
    ]
    # The README's Label Studio round trip reads the project's export: made here from the
    # tasks file the README writes, as Label Studio would make it after one correction.
    split = next(i for i, (_, code) in enumerate(blocks) if READS_EXPORT in code)
    line, code = blocks[split]
    head, tail = code.split(READS_EXPORT, 1)
    blocks[split] = (line, f"{head}exec({MAKE_EXPORT!r}, {{}})\n{READS_EXPORT}{tail}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PHASEO_API_KEY", "PHASEO_BASE_URL", "PHASEO_LOCAL_API_KEY")
    }
    env.update(
        PHASEO_CACHE_DIR=str(tmp_path / "cache"),
        PHASEO_NO_PROGRESS="1",
        MPLBACKEND="Agg",
    )
    result = subprocess.run(
        [sys.executable, "-c", RUNNER.format(blocks=blocks)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "all README blocks ran" in result.stdout
    for name in ("tasks.json", "results.jsonl", "export.json"):
        assert (tmp_path / name).is_file(), name
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    assert tasks[0]["data"]["audio"].startswith("data:audio/wav;base64,")  # playable as is
    # The failing row of the first example is in its output, with its reason.
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r["text_error"] is not None]
    assert [r["file"] for r in failed] == ["missing.wav"]
    assert failed[0]["text_error"].startswith("AudioInputError:")
