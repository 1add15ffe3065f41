"""Security lint of k8s/ (checkov) and Dockerfile lint (hadolint), with zero findings
left unexplained; plus what the images must be for the manifests to run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import manifests as m

BIN = Path(sys.executable).parent
CRATES = ["app-that-calls-externally", "traffic", "hello-cf"]
DOCKERFILES = [m.REPO_DIR / crate / "Dockerfile" for crate in CRATES]
# The UID of distroless's `nonroot` user; the manifests run as the same.
RUNTIME_UID = 65532


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} not installed: run bash scripts/setup.sh"
    return path


# ------------------------------------------------------------------ hadolint


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=CRATES)
def test_hadolint_finds_nothing(dockerfile):
    result = hadolint(dockerfile)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=CRATES)
def test_every_hadolint_ignore_says_why(dockerfile):
    lines = dockerfile.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"#\s*hadolint\s+ignore=", line):
            reason = [l for l in lines[max(0, i - 4) : i] if l.startswith("#") and "hadolint" not in l]
            rule = line.split("=", 1)[1].split(",")[0].strip()
            assert any(rule in l for l in reason), f"{dockerfile}:{i + 1}: ignore of {rule} without a reason naming it"


@pytest.mark.parametrize(
    "edit, rule",
    [
        (lambda text: text.replace("# hadolint ignore=DL3018\n", ""), "DL3018"),
        (lambda text: text.replace("USER 65532:65532", "USER root"), "DL3002"),
        (lambda text: text.replace("FROM rust:1.95-alpine AS build", "FROM rust AS build"), "DL3006"),
    ],
    ids=["unpinned-apk", "root-user", "untagged-image"],
)
def test_hadolint_catches(tmp_path, edit, rule):
    text = DOCKERFILES[0].read_text(encoding="utf-8")
    broken = tmp_path / "Dockerfile"
    broken.write_text(edit(text), encoding="utf-8")
    assert broken.read_text(encoding="utf-8") != text
    result = hadolint(broken)
    assert result.returncode != 0 and rule in result.stdout, result.stdout


# ------------------------------------------------------------------ the images


def stages(text: str) -> list[str]:
    return re.findall(r"^FROM\s+(.+)$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("crate", CRATES)
def test_dockerfile_builds_a_static_binary_into_a_minimal_nonroot_image(crate):
    text = (m.REPO_DIR / crate / "Dockerfile").read_text(encoding="utf-8")
    froms = stages(text)
    assert len(froms) >= 2, "multi-stage build expected"
    assert re.match(r"rust:[\d.]+-alpine", froms[0]), "the builder compiles for musl (static)"
    final = froms[-1].split()[0]
    assert final.startswith("gcr.io/distroless/static") or final == "scratch", final
    assert re.search(rf"cargo build --profile dist --locked -p {crate}\b", text)
    users = re.findall(r"^USER\s+(\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1] == f"{RUNTIME_UID}:{RUNTIME_UID}", "numeric non-root USER in the final stage"
    assert text.rstrip().endswith(f'ENTRYPOINT ["/usr/local/bin/{crate}"]')
    # Build context is the repository root: the workspace shares common/.
    assert f"docker build -f {crate}/Dockerfile -t egress-demo/{crate}:" in text


def test_manifests_run_the_images_the_dockerfiles_build():
    docs = m.load_all()
    images = {
        c["image"]
        for d in docs
        if m.pod_spec(d)
        for c in m.containers(m.pod_spec(d))
    }
    documented = set()
    for dockerfile in DOCKERFILES:
        match = re.search(r"-t (\S+) \.$", dockerfile.read_text(encoding="utf-8"), flags=re.MULTILINE)
        assert match, f"{dockerfile}: no documented image name"
        documented.add(match.group(1))
    assert images and images <= documented, (images, documented)
    for d in docs:
        spec = m.pod_spec(d)
        if spec:
            for c in m.containers(spec):
                assert c["securityContext"]["runAsUser"] == RUNTIME_UID


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = (m.REPO_DIR / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in ["target/", ".git/", ".venv/"]:
        assert entry in ignored
    for crate in ["common", *CRATES]:
        assert not any(e.strip("/") == crate for e in ignored), f"{crate} is needed by the build"


# ------------------------------------------------------------------ checkov


def checkov(directory: Path) -> dict:
    result = subprocess.run(
        [tool("checkov"), "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    return report


def copy_manifests(tmp_path: Path) -> Path:
    target = tmp_path / "k8s"
    target.mkdir()
    for path in m.manifest_files():
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    return checkov(m.K8S_DIR)


def test_checkov_finds_nothing(checkov_report):
    failed = checkov_report["results"]["failed_checks"]
    assert [(f["check_id"], f["resource"]) for f in failed] == []
    assert checkov_report["summary"]["passed"] > 100


def test_every_checkov_skip_says_why(checkov_report):
    skipped = checkov_report["results"]["skipped_checks"]
    assert skipped, "checkov reported none of the skip annotations of the manifests"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, f"{check['check_id']} on {check['resource']}: no reason given"
    for doc in m.load_all():
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check_id) and len(reason) > 30, value


def test_checkov_catches_an_unhardened_deployment(tmp_path):
    directory = copy_manifests(tmp_path)
    path = directory / "traffic.yml"
    text = path.read_text(encoding="utf-8")
    broken = re.sub(r"\n          securityContext:\n(            .*\n)+", "\n", text)
    assert broken != text
    path.write_text(broken, encoding="utf-8")
    failed = {f["check_id"] for f in checkov(directory)["results"]["failed_checks"]}
    # Read-only root, no privilege escalation, dropped capabilities.
    assert {"CKV_K8S_22", "CKV_K8S_20", "CKV_K8S_37"} <= failed, failed


# ------------------------------------------------------------------ shellcheck

# Every shell script of the project, not only k8s/'s.
REPO_DIR = m.K8S_DIR.parent
SCRIPTS = sorted(
    path
    for path in [*REPO_DIR.glob("*/*.sh"), *REPO_DIR.glob("*/tests/*.sh"), REPO_DIR / ".ci" / "run"]
    if "target" not in path.parts
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_DIR)))
def test_shellcheck_finds_nothing(script):
    result = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_shellcheck_catches_an_unquoted_variable(tmp_path):
    script = tmp_path / "broken.sh"
    script.write_text('#!/usr/bin/env bash\nfile=$1\nrm $file\n', encoding="utf-8")
    result = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SC2086" in result.stdout
