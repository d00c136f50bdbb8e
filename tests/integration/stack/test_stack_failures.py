"""How `up` fails: a component that dies while starting is named, with its log, and nothing is left."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from conveyor import stack
from conveyor.settings import Settings

pytestmark = [pytest.mark.integration]


def _python(code: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-c", code))


def test_a_component_dying_at_start_is_named_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real supervisord runs stand-ins: mlflow exits with an error, the others idle."""
    real_render = stack.render_supervisord_conf

    def render(settings: Settings, state: stack.StackState, paths: stack.StackPaths, bin_dir: Path) -> str:
        conf = real_render(settings, state, paths, bin_dir)
        idle = _python("import time; time.sleep(600)")
        dying = _python("import sys; print('cannot open the backend store: disk on fire'); sys.exit(3)")
        lines = []
        section = ""
        for line in conf.splitlines():
            if line.startswith("[program:"):
                section = line
            if line.startswith("command="):
                line = "command=" + (dying if section == "[program:mlflow]" else idle)
            lines.append(line)
        return "\n".join(lines)

    monkeypatch.setattr(stack, "render_supervisord_conf", render)
    settings = stack.isolated_settings(tmp_path / "home")
    with pytest.raises(stack.ComponentFailedError) as err:
        stack.up(settings, timeout=60)
    assert err.value.component == "mlflow"
    message = str(err.value)
    assert "mlflow" in message and "conveyor up" in message
    assert "disk on fire" in message  # the log tail
    state = stack.load_state(stack.StackPaths(settings.home))
    assert state is not None
    assert stack.stack_processes(state.stack_id, settings.home) == []  # the failed start was cleaned up
    assert not stack.supervisord_running(stack.StackPaths(settings.home))
