import sys

from reid.cli import main

sys.exit(main())
