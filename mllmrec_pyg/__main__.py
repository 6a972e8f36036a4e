import sys

from mllmrec_pyg.cli import main

sys.exit(main())
