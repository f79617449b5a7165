"""Build captioned webdataset shards from RS datasets. See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from shards.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
