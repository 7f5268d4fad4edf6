"""Where inductor keeps the compiled decode step between runs."""

from __future__ import annotations

import os
from pathlib import Path


def use_persistent_cache() -> None:
    """Point inductor's cache at the user's cache directory (it defaults to /tmp), once."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    import platformdirs

    directory = Path(platformdirs.user_cache_dir("longyarn")) / "torchinductor"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # a read-only home: inductor's default is fine
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
