import sys

from mitotype.cli import main

sys.exit(main())
