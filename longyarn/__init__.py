"""longyarn: write arbitrarily long fiction with a language model, one paragraph at a time.

The four parts of the design live under this one import name, so none of them can shadow an
installed package: `longyarn.recurrent_core` (the engine), `longyarn.kernels` (compute kernels),
`longyarn.storage` (SQLAlchemy stores) and `longyarn.app` (the CLI, the Textual UI and web serving).
"""
