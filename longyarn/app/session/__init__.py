"""The session layer: what a writer or a reader is doing in a story, with no UI.

The front ends (the writers' Textual UI, the reader in a terminal or a browser, batch) render
what these objects say and call what they offer; the engine's lifecycle is `EngineHost`'s.
"""
