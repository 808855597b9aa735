import sys

from datascout.cli import main

sys.exit(main())
