"""Snapshots of screens with a focused text box must not depend on when the cursor blinks."""

from __future__ import annotations

import pytest


@pytest.fixture
def snap_compare(snap_compare):
    """The snapshot plugin's comparison, with every text box's cursor held steady (shown, not blinking)
    before the picture is taken: a blink caught in the other phase changes one cell's style."""

    def compare(app, *args, run_before=None, **kwargs):
        async def steady(pilot):
            if run_before is not None:
                await run_before(pilot)
            for screen in pilot.app.screen_stack:
                for box in screen.query("Input, TextArea"):
                    box.cursor_blink = False
            await pilot.pause()

        return snap_compare(app, *args, run_before=steady, **kwargs)

    return compare
