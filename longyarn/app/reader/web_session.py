"""One browser session of `longyarn read --serve`: the reader app on textual's web driver.

textual-serve starts `python -m longyarn.app.reader.web_session` per websocket, with the reader's
token and the server's settings in the environment (see `longyarn.app.reader.web`).
"""

from __future__ import annotations

import json
import os


def main() -> None:
    from longyarn.app.settings import Settings
    from longyarn.storage.db import open_store

    from . import action_chars, engine_factory, steps_per_minute
    from .app import make_reader_app
    from longyarn.app.session.reader_identity import parse_token
    from .web import SETTINGS_ENV, STORY_ENV, TOKEN_ENV

    settings = Settings(**json.loads(os.environ.get(SETTINGS_ENV) or "{}"))
    token = parse_token(os.environ.pop(TOKEN_ENV, None))  # not inherited by anything we start
    store = open_store(settings.db)
    try:
        make_reader_app(
            store=store,
            token=token,
            engine_factory=engine_factory(store, settings),
            story_id=os.environ.get(STORY_ENV) or None,
            steps_per_minute=steps_per_minute(settings),
            action_chars=action_chars(settings),
            in_browser=True,
        ).run()
    finally:
        store.close()


if __name__ == "__main__":
    main()
