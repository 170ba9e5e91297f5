from __future__ import annotations

import sys

from tagger.cli import main

sys.exit(main())
