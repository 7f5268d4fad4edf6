"""Snapshots of screens with a focused text box must not depend on when the cursor blinks."""

from __future__ import annotations

import pytest


@pytest.fixture
def snap_compare(snap_compare):
    """The snapshot plugin's comparison, with the focused text box's cursor held steady (shown, not blinking)
    before the picture is taken: a blink caught in the other phase changes one cell's style."""

    def compare(app, *args, run_before=None, **kwargs):
        async def steady(pilot):
            if run_before is not None:
                await run_before(pilot)
            focused = pilot.app.focused
            if focused is not None and hasattr(focused, "cursor_blink"):
                focused.cursor_blink = False
            await pilot.pause()

        return snap_compare(app, *args, run_before=steady, **kwargs)

    return compare
