"""`python -m pipeline --runner=DirectRunner [options]`: see `python -m pipeline --help`."""
import sys

from pipeline.cli import main

sys.exit(main())
