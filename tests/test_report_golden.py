"""The report of a fixed set of run directories, compared byte for byte with a stored copy.

``tests/fixtures/report_runs/test/`` holds run directories in every state (done over three
seeds, one seed, the floor, failed, partial, a published setting); the expected ``report.md``,
``results.csv`` and ``report.html`` are in ``tests/fixtures/report_golden/``. Only the
generation timestamp and the embedded PNG payloads are masked: the PNG bytes depend on the
installed matplotlib, not on our code.

After an intended change of the report, regenerate the stored copy with
``EMIM_BENCH_REGOLD=1 pytest tests/test_report_golden.py`` and review its diff.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from emim_bench.report.render import write_report

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "report_runs"
GOLDEN = FIXTURES / "report_golden"
NOTES = "EMIM and SimCLR over three seeds.\n\nThe `random` floor has\ntwo seeds; **BYOL** one."
MISSING = "swav-cifar10-resnet18-s0-00000000"
_TIMESTAMP = re.compile(r"Generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def _masked(text: str) -> str:
    text = _TIMESTAMP.sub("Generated <timestamp>", text)
    return _PNG.sub("data:image/png;base64,<png>", text)


def _render(workdir: Path) -> dict[str, str]:
    """The report's text files, written from a copy of the fixture at ``workdir/runs/test``."""
    shutil.copytree(RUNS, workdir / "runs")
    cwd = Path.cwd()
    os.chdir(workdir)  # the report prints RUNS_DIR as given: relative, the same on every machine
    try:
        expected = sorted(p.name for p in Path("runs/test").iterdir()) + [MISSING]
        write_report(
            "runs/test",
            "report",
            command="emim-bench sweep sweeps/test.yaml",
            expected=expected,
            notes=NOTES,
        )
    finally:
        os.chdir(cwd)
    out = workdir / "report"
    return {name: _masked((out / name).read_text()) for name in GOLDEN_FILES}


GOLDEN_FILES = ("report.md", "results.csv", "report.html")


def test_report_of_fixed_runs_is_byte_identical_to_the_stored_copy(tmp_path):
    rendered = _render(tmp_path)
    if os.environ.get("EMIM_BENCH_REGOLD"):
        GOLDEN.mkdir(exist_ok=True)
        for name, text in rendered.items():
            (GOLDEN / name).write_text(text)
    for name, text in rendered.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from {GOLDEN / name}"


def test_the_same_runs_give_the_same_figures_byte_for_byte(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        workdir.mkdir()
        _render(workdir)
    figures = sorted(p.name for p in (first / "report" / "figures").glob("*.png"))
    assert figures == ["accuracy.png", "knn_vs_epoch.png", "knn_vs_time.png", "throughput.png"]
    for name in figures:
        a = (first / "report" / "figures" / name).read_bytes()
        assert a == (second / "report" / "figures" / name).read_bytes(), name
