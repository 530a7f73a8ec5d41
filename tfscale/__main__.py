import sys

from tfscale.cli import main

sys.exit(main())
