"""Front ends: the CLI, batch, the Textual UI (writer and reader modes) and web serving."""
