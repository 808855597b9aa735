"""The data engine: a persistent labeling campaign in SQLite (see :mod:`datascout.campaign.core`)."""

from datascout.campaign.core import Campaign, ConflictError, NotFoundError
from datascout.campaign.items import read_items
from datascout.campaign.formats import EXPORT_FORMATS, read_label_file
from datascout.campaign.schema import DB_NAME, SCHEMA_VERSION, connect, migrate

__all__ = ["Campaign", "ConflictError", "NotFoundError", "read_items", "EXPORT_FORMATS",
           "read_label_file", "DB_NAME", "SCHEMA_VERSION", "connect", "migrate"]
