"""The headless longyarn engine: the RecurrentGPT step, memory, prompts, parsing, model backends.

Importing this package never imports torch or textual; the local model loads them lazily.
"""
