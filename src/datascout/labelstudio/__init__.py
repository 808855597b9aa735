"""Label Studio integration: its REST client, the live sync with a project, and the machine
learning backend protocol (see :mod:`datascout.labelstudio.backend`)."""

from datascout.labelstudio.client import TOKEN_ENV, Client, LabelStudioError
from datascout.labelstudio.sync import Sync

__all__ = ["TOKEN_ENV", "Client", "LabelStudioError", "Sync"]
