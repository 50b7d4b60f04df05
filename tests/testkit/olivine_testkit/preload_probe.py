"""A module ``Scale`` names in ``preload``: it records which thread imported it."""

from __future__ import annotations

import threading

#: the name of the thread whose import ran this module
IMPORTED_BY = threading.current_thread().name
