"""Cygnet: copy-on-write branches of PostgreSQL databases on ZFS."""

__version__ = "0.2.0"
