"""``python -m gsam.catalog [methods|models|experiments] [--table1]``: the listing of gsam.catalog, printed."""
import sys

from gsam.catalog.cli import main

sys.exit(main())
