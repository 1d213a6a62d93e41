import sys

from birth.cli import main

sys.exit(main())
