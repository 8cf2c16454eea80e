"""comm100-sync: a SQL copy of the Comm100 Partner API's platform list, with an audit trail."""

__version__ = "0.1.0"
