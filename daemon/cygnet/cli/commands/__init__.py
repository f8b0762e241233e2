"""One module per noun: db, branch, snapshot, and the small top-level commands."""
