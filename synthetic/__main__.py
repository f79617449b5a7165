"""``python -m synthetic OUT [--seed N ...]``: write the demo data set (see ``synthetic.demo_data``)."""

import sys

from synthetic.demo_data import main

sys.exit(main())
