"""`python -m adapter.emulator`: run an emulated vLLM Deployment (see server.py)."""

import sys

from adapter.emulator.server import main

if __name__ == "__main__":
    sys.exit(main())
