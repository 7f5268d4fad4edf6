"""The writers' terminal UI (Textual): `make_app` builds it, `run_write` runs it."""

from .app import LongyarnApp, load_keymap, make_app, run_write

__all__ = ["LongyarnApp", "load_keymap", "make_app", "run_write"]
