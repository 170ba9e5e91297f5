"""Stand-in of the WebUI's ``modules`` package, for tests only (see ../README.md)."""
