"""Stand-in of the WebUI's ``modules.call_queue``: the lock image generation holds."""

import threading

queue_lock = threading.Lock()
