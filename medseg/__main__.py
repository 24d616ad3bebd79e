import sys

from medseg.cli import main

if __name__ == "__main__":  # guarded: batch worker processes (spawn) re-import the main module
    sys.exit(main())
