import sys

from RadioGenomicsLib.cli import main

sys.exit(main())
