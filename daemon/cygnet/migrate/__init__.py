"""Migrations per branch: golang-migrate's file layout, applied and recorded inside the branch."""
