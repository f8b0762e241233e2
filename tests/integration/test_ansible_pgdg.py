"""The host role adds the PGDG repository only for majors the distribution
lacks, with the key Debian's postgresql-common ships (run in check mode: the
test machine must not gain an apt source)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"


def run_host_tasks(tmp_path: Path, versions: list[str]) -> str:
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": True,
             "gather_subset": ["!all", "min"],
             "vars": {"ansible_python_interpreter": "/usr/bin/python3",
                      "cygnet_host_postgres_versions": versions,
                      "cygnet_host_distribution_postgres": ["15"],
                      "cygnet_host_pgdg_mirror": "https://apt.postgresql.org/pub/repos/apt"},
             "tasks": [{"name": "PGDG when needed",
                        "ansible.builtin.include_tasks": str(
                            ANSIBLE / "roles/cygnet_host/tasks/pgdg.yml"),
                        "when": "cygnet_host_postgres_versions | "
                                "difference(cygnet_host_distribution_postgres) | length > 0"}]}]
    book = tmp_path / "pgdg.yml"
    book.write_text(json.dumps(play))
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "--check", "--diff", str(book)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
             "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not Path("/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc").exists(),
                    reason="postgresql-common's PGDG key is not installed")
def test_pgdg_repository_only_for_majors_debian_lacks(tmp_path: Path) -> None:
    wanted = run_host_tasks(tmp_path, ["15", "17"])
    assert "Add the PGDG apt repository" in wanted
    assert "Suites: bookworm-pgdg" in wanted  # the --diff of the sources file
    assert "Signed-By: /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc" in wanted
    assert not Path("/etc/apt/sources.list.d/pgdg.sources").exists()  # check mode wrote nothing
    only_15 = run_host_tasks(tmp_path, ["15"])
    assert "Add the PGDG apt repository" not in only_15
