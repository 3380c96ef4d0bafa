"""The trainer's failures that are not the user's data: the model, the device, the run folder,
a checkpoint, a diverging loss. Printed like every user-facing error (`uftdata.errors.UftError`)."""

from __future__ import annotations

from uftdata.errors import UftError


class TrainError(UftError):
    """A run cannot start or go on for a reason the user can fix (`uft-train` prints one line, exit 2)."""
