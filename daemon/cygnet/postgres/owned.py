"""Settings Cygnet owns: users may not set them, and ALTER SYSTEM cannot override them.

postgresql.auto.conf (ALTER SYSTEM) is read after every file postgresql.conf
includes, so it would beat cygnet.conf. Before every start and refresh,
Cygnet removes the owned settings from it (strip_owned).
"""

from __future__ import annotations

OWNED = frozenset({
    # Where and how the branch listens: the host's ports, sockets and TLS.
    "port", "listen_addresses", "unix_socket_directories", "unix_socket_group",
    "unix_socket_permissions", "ssl", "ssl_ca_file", "ssl_cert_file", "ssl_key_file",
    "ssl_crl_file", "ssl_crl_dir", "ssl_ciphers", "ssl_dh_params_file",
    "ssl_ecdh_curve", "ssl_max_protocol_version", "ssl_min_protocol_version",
    "ssl_passphrase_command", "ssl_passphrase_command_supports_reload",
    "ssl_prefer_server_ciphers", "password_encryption", "krb_server_keyfile",
    # Files Cygnet writes or finds.
    "hba_file", "ident_file", "data_directory", "config_file", "external_pid_file",
    # Branches never archive into, restore from or stream from their parent.
    "archive_mode", "archive_command", "archive_library", "archive_timeout",
    "archive_cleanup_command", "restore_command", "recovery_end_command",
    "primary_conninfo", "primary_slot_name",
    # Snapshots and clones rely on durable, complete pages.
    "fsync", "full_page_writes",
    # The postmaster's stderr is the branch's log file.
    "log_destination", "logging_collector",
    # A fresh clone runs with it at 0 until inherited subscriptions are disarmed.
    "max_logical_replication_workers",
    # Loading code from elsewhere than Postgres' own library directory.
    "dynamic_library_path",
})

# Also kept out of postgresql.auto.conf: set through Cygnet, where a value is
# checked (it must keep PRELOADED, and a missing library would stop the start).
AUTO_STRIPPED = OWNED | {"shared_preload_libraries"}

# Always preloaded: query statistics for every database (CREATE EXTENSION works).
PRELOADED = ("pg_stat_statements",)
# Preloaded on replicated primaries only (native/fence, docs/ha.md "Fencing"),
# whatever the branch's own list says; never in that list.
FENCE = ("cygnet_fence",)


def is_owned(name: str) -> bool:
    return name.lower() in OWNED


def setting_name(line: str) -> str:
    """The lower-cased setting a config line sets ('' for comments and blank lines)."""
    body = line.split("#", 1)[0].strip()
    return body.replace("=", " ", 1).split()[0].lower() if body else ""


def strip_owned(text: str) -> str:
    """postgresql.auto.conf text without the lines that set an AUTO_STRIPPED setting."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if setting_name(line) not in AUTO_STRIPPED)
