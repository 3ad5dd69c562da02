"""Live widgets in a kernel, a note in headless runs."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..series import HEADLESS_ENV


def knob_widget(fn: Callable, **controls):
    """``ipywidgets.interact(fn, **controls)`` in a live kernel (``make lab``). In a headless run
    (:data:`HEADLESS_ENV` set) a one-line note instead: nothing could show the widget, and executing widget
    cells headlessly can stall nbclient; each widget's static fallback figure follows it in the notebook."""
    if os.environ.get(HEADLESS_ENV):
        print("headless run: this widget needs a live kernel (make lab); the figure below shows the same panels")
        return None
    import ipywidgets

    return ipywidgets.interact(fn, **controls)
