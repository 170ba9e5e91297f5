"""WD14 image tagger: a host-free engine with a command line, an HTTP API and a WebUI tab.

Importing this package does nothing but define names: no downloads, no sessions, no global settings.
"""

from __future__ import annotations

__version__ = "0.1.0"
