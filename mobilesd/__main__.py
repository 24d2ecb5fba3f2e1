import sys

from mobilesd.cli import main

sys.exit(main())
