"""``python -m unhidra_ml --connect <socket> [--max-frame-bytes N]``: see worker.py."""

from __future__ import annotations

import os
import sys

# The import names of the runtime dependencies, and the packages that provide them.
PACKAGES = {"vaderSentiment": "vaderSentiment", "better_profanity": "better-profanity"}
EXIT_MISSING_DEPENDENCY = 4


def run() -> int:
    # Nothing may reach stdout: whatever prints there (this package or a library, from
    # Python or C) goes to stderr instead.
    try:
        os.dup2(2, 1)
    except OSError:
        pass
    sys.stdout = sys.stderr
    try:
        from unhidra_ml.worker import main
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = PACKAGES.get(module, module or "?")
        sys.stderr.write(
            f"unhidra_ml: missing package {package} (import {module or exc} failed): "
            "install ml-worker/requirements.txt (scripts/setup-ml.sh)\n"
        )
        return EXIT_MISSING_DEPENDENCY
    return main()


if __name__ == "__main__":
    sys.exit(run())
