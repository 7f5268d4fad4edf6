"""Textual widgets and wording shared by the writers' UI (`app.tui`) and the reader (`app.reader`)."""
