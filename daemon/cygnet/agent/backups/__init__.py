"""Backups of branches and branch diffs: the backup library wired into cygnetd.

temp.py reads consistent images through temporary clones; create, restore,
prune and diff orchestrate the library (cygnet.backup, cygnet.blocks);
service.py adds locking, request ids and progress; servicer.py speaks gRPC.
"""
