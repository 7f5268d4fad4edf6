"""The web reader, `longyarn read --serve`: interactive fiction as web pages for many readers.

An ASGI app (Starlette on uvicorn) of HTML pages, a little script of its own and server-sent
events, over one shared engine per process; readers are rows in the database. `app` builds it,
`serving` runs it (several workers, one database), `pages` and `actions` are its routes,
`moves` the paragraphs in flight, `security` the cookie, CSRF, headers and body limits.
"""
