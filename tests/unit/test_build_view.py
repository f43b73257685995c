"""The live build view renders BuildKit's bracket-heavy lines as text (a failed step used to raise MarkupError)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from smimg.cli import progress

FAILED_STEP = [
    "#9 [5/9] RUN /opt/smimg/bin/python /opt/smimg/installer.py /opt/smimg/requirements/install.json",
    "#9 1.20 Collecting torch==2.5.0 [from -r /opt/smimg/requirements/requirements-0.txt]",
    '#9 ERROR: process "/bin/sh -c /opt/smimg/bin/python [/bin/sh -c x]" did not complete successfully: exit code: 1',
]


def test_a_failed_step_is_shown_verbatim_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(progress, "err", Console(file=screen, force_terminal=True, width=200, color_system=None))
    with progress.BuildView(live=True) as view:
        for line in FAILED_STEP:
            view(line)
    assert "✗ [5/9] RUN /opt/smimg/bin/python /opt/smimg/installer.py" in screen.getvalue()
    assert '[/bin/sh -c x]" did not complete successfully' in screen.getvalue()
