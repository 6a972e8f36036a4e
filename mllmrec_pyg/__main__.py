import sys

from mllmrec_pyg.cli import main

if __name__ == "__main__":
    sys.exit(main())
