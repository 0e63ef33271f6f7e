import sys

from cmedbert.cli import main

sys.exit(main())
