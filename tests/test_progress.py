"""Stage lines and progress bars: readable on a terminal and in a log file."""

import io
import sys

from pirecon._progress import bar_enabled, progress_bar, stage


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_stage_prints_its_start_and_its_duration():
    out = io.StringIO()
    with stage("simulating 10 images", stream=out):
        pass
    first, second = out.getvalue().splitlines()
    assert first == "simulating 10 images ..."
    assert second.startswith("simulating 10 images: done in ") and second.endswith(" s")
    float(second.removeprefix("simulating 10 images: done in ").removesuffix(" s"))


def test_a_disabled_stage_prints_nothing():
    out = io.StringIO()
    with stage("quiet", enabled=False, stream=out):
        pass
    assert out.getvalue() == ""


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bar_enabled(True)
    assert list(progress_bar(range(3), desc="x")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""  # a log file gets no bar at all
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert bar_enabled(True) and not bar_enabled(False)
    assert list(progress_bar(range(3), desc="TV-PDHG", file=sys.stderr)) == [0, 1, 2]
    assert "TV-PDHG" in sys.stderr.getvalue()
