"""k8s/set-cf-hosts.sh, run on a copy of istio.yml and the pattern files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import checks as c
import manifests as m
import schemas

SCRIPT = m.K8S_DIR / "set-cf-hosts.sh"


@pytest.fixture
def istio_copy(tmp_path) -> Path:
    """istio.yml in a copy of k8s/ that also holds the pattern files."""
    path = tmp_path / "istio.yml"
    shutil.copy(m.K8S_DIR / "istio.yml", path)
    shutil.copytree(m.PATTERNS_DIR, tmp_path / "patterns")
    return path


def copied_patterns(istio_file: Path) -> list[Path]:
    return sorted((istio_file.parent / "patterns").glob("*.yml"))


def all_text(istio_file: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in [istio_file, *copied_patterns(istio_file)]}


def run(istio_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "K8S_DIR": str(istio_file.parent)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def with_workloads(istio_file: Path) -> list[dict]:
    others = [p for p in m.manifest_files() if p.name != "istio.yml"]
    return m.load_file(istio_file) + [d for p in others for d in m.load_file(p)]


def split_hosts(docs) -> list[tuple[str, int, str]]:
    vs = m.named(docs, "VirtualService", "hello-external-split")
    return [
        (d["destination"]["host"], d["weight"], d["headers"]["request"]["set"]["host"]) for d in vs["spec"]["http"][0]["route"]
    ]


def test_sets_both_hosts_everywhere(istio_copy):
    old_v1, old_v2 = m.cf_hosts(m.load_file(istio_copy))
    result = run(istio_copy, "hello-v1.apps.lab.example.org", "hello-v2.apps.lab.example.org")
    assert result.returncode == 0, result.stderr
    for name, text in all_text(istio_copy).items():
        assert old_v1 not in text and old_v2 not in text, name
    docs = with_workloads(istio_copy)
    assert m.cf_hosts(docs) == ["hello-v1.apps.lab.example.org", "hello-v2.apps.lab.example.org"]
    assert split_hosts(docs) == [
        ("hello-v1.apps.lab.example.org", 30, "hello-v1.apps.lab.example.org"),
        ("hello-v2.apps.lab.example.org", 70, "hello-v2.apps.lab.example.org"),
    ]
    assert c.all_problems(docs) == []
    assert [p for d in m.load_file(istio_copy) for p in schemas.validate(d, schemas.OLDEST_KUBERNETES)] == []
    for pattern in copied_patterns(istio_copy):
        assert c.all_problems(m.merged(docs, m.load_file(pattern))) == [], pattern.name
    assert "hello-v1.apps.lab.example.org" in result.stdout
    assert len(result.stdout.splitlines()) == 3 + len(copied_patterns(istio_copy))


def test_swapping_the_hosts_swaps_the_weights(istio_copy):
    old_v1, old_v2 = m.cf_hosts(m.load_file(istio_copy))
    assert run(istio_copy, old_v2, old_v1).returncode == 0
    docs = with_workloads(istio_copy)
    assert split_hosts(docs) == [(old_v2, 30, old_v2), (old_v1, 70, old_v1)]
    assert c.all_problems(docs) == []


def test_running_twice_is_stable(istio_copy):
    assert run(istio_copy, "a.example.org", "b.example.org").returncode == 0
    first = all_text(istio_copy)
    assert run(istio_copy, "a.example.org", "b.example.org").returncode == 0
    assert all_text(istio_copy) == first


def test_touches_nothing_but_the_hostnames(istio_copy):
    before = all_text(istio_copy)
    old_v1, old_v2 = m.cf_hosts(m.load_file(istio_copy))
    assert run(istio_copy, "a.example.org", "b.example.org").returncode == 0
    after = all_text(istio_copy)
    assert set(after) == set(before) and len(after) > 1
    for name, text in after.items():
        assert text.replace("a.example.org", old_v1).replace("b.example.org", old_v2) == before[name], name


def test_patterns_name_the_hosts_istio_yml_names(istio_copy):
    """Each pattern file's Cloud Foundry names are the pair the script rewrites."""
    hosts = set(m.cf_hosts(m.load_file(istio_copy)))
    for pattern in copied_patterns(istio_copy):
        named_hosts = {
            d["spec"]["host"] for d in m.load_file(pattern) if d["kind"] == "DestinationRule" and d["spec"]["host"] != m.EGRESS_GATEWAY_HOST
        } | {dest.get("host") for d in m.load_file(pattern) if d["kind"] == "VirtualService" for _, dest in m.destinations(d)}
        named_hosts -= {m.EGRESS_GATEWAY_HOST}
        assert named_hosts <= hosts, (pattern.name, named_hosts - hosts)


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "expected 2 hostnames, got 0"),
        (("only-one.example.org",), "expected 2 hostnames, got 1"),
        (("Upper.example.org", "b.example.org"), "invalid hostname 'Upper.example.org'"),
        (("a.example.org", "https://b.example.org/"), "invalid hostname 'https://b.example.org/'"),
        (("nodots", "b.example.org"), "invalid hostname 'nodots'"),
        (("a.example.org", "a.example.org"), "must differ"),
        (("hello.external", "b.example.org"), "stable name"),
    ],
)
def test_bad_arguments_exit_2_and_change_nothing(istio_copy, args, message):
    before = all_text(istio_copy)
    result = run(istio_copy, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all_text(istio_copy) == before


def test_help_exits_0(istio_copy):
    result = run(istio_copy, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout
