import sys

from rlstm.cli import main

sys.exit(main())
