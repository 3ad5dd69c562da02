"""Notebooks 04 and 05: the colour network, its losses and its training.

:mod:`.pairs` feeds the pairs, :mod:`.objectives` and :mod:`.discriminators` say what a step minimises,
:mod:`.loop` runs the stages, :mod:`.validate` scores the epochs and chooses one, :mod:`.checkpoint` reads and
writes the weights.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or resume; the message names the file or setting and what to do."""
