"""k8s/README.md's "Try the patterns" section states, for each pattern file, the commands and
the shares the file's own numbers give."""

from __future__ import annotations

import re

import pytest

import manifests as m

README = (m.K8S_DIR / "README.md").read_text(encoding="utf-8")
SECTION = README[README.index("## Try the patterns") : README.index("## Clean-up")]
BASE = m.load_all()
# The share of v2's requests the flaky-v2 patterns assume (FAIL_PERCENT 50).
FAIL_SHARE = 0.5


def pattern(name: str) -> list[dict]:
    return m.merged(BASE, m.load_file(m.PATTERNS_DIR / name))


def route(docs: list[dict], name: str) -> dict:
    vs = m.named(docs, "VirtualService", name)
    assert vs is not None
    return vs["spec"]["http"][-1]


def weights(docs: list[dict]) -> dict[str, float]:
    entries = route(docs, "hello-external-split")["route"]
    return {e["destination"]["host"]: e.get("weight", 100) / 100 for e in entries}


def percent(value: float) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


@pytest.mark.parametrize("path", m.pattern_files(), ids=lambda p: p.name)
def test_each_pattern_has_its_cluster_and_local_command(path):
    assert f"kubectl apply -f k8s/patterns/{path.name}" in SECTION
    assert f"local-mesh apply -f k8s/patterns/{path.name}" in SECTION


@pytest.mark.parametrize("path", [p for p in m.pattern_files() if p.name.startswith("traffic-shift-")], ids=lambda p: p.name)
def test_traffic_shifting_rows_state_the_files_weights(path):
    v1, v2 = m.cf_hosts(BASE)
    w = weights(pattern(path.name))
    row = next(line for line in SECTION.splitlines() if f"kubectl apply -f k8s/patterns/{path.name}" in line)
    shares = [f"{percent(w[h])} v{i}" for i, h in ((1, v1), (2, v2)) if w[h] > 0]
    assert row.rstrip(" |").endswith(", ".join(shares)), (row, shares)


def test_retries_shares_follow_from_the_files():
    v1, v2 = m.cf_hosts(BASE)
    w = weights(BASE)
    fails_per_try = w[v2] * FAIL_SHARE
    without = route(pattern("no-retries.yml"), "hello-external-via-egress")["retries"]["attempts"]
    with_retries = route(pattern("retries.yml"), "hello-external-via-egress")["retries"]["attempts"]
    assert without == 0
    assert f"{percent(w[v1])} v1, {percent(w[v2] - fails_per_try)} v2, {percent(fails_per_try)} v2's 503 body" in SECTION
    tries = with_retries + 1
    failed = fails_per_try**tries
    answered = sum(fails_per_try**k for k in range(tries))
    assert f"≈{percent(round(w[v1] * answered, 3))} v1" in SECTION
    assert f"{percent(round(w[v2] * (1 - FAIL_SHARE) * answered, 2))} v2, {percent(round(failed, 3))} v2's 503 body" in SECTION


def test_delay_shares_follow_from_the_file():
    docs = pattern("delay-timeouts.yml")
    delay = route(docs, "hello-external-split")["fault"]["delay"]
    mesh = route(docs, "hello-external-via-egress")
    per_try = m.parse_duration(mesh["retries"]["perTryTimeout"])
    assert m.parse_duration(delay["fixedDelay"]) > per_try
    tries = mesh["retries"]["attempts"] + 1
    assert tries * per_try <= m.parse_duration(mesh["timeout"])
    timed_out = (delay["percentage"]["value"] / 100) ** tries
    assert f"≈{percent(timed_out)} `upstream request timeout`" in SECTION
    v1, v2 = m.cf_hosts(BASE)
    w = weights(docs)
    assert f"{round((1 - timed_out) * w[v1] * 100)}% v1" in SECTION
    assert f"{round((1 - timed_out) * w[v2] * 100)}% v2" in SECTION


def test_mirroring_share_follows_from_the_file():
    mesh = route(pattern("mirroring.yml"), "hello-external-via-egress")
    assert f"a copy of {round(mesh['mirrorPercentage']['value'])}% of them goes to v2" in SECTION


def test_circuit_breaking_limits_are_the_files():
    dr = m.named(pattern("circuit-breaking.yml"), "DestinationRule", "hello-istio-v2-tls")
    pool = dr["spec"]["trafficPolicy"]["portLevelSettings"][0]["connectionPool"]
    for field, value in [*pool["tcp"].items(), *pool["http"].items()]:
        assert f"`{field}: {value}`" in SECTION
    assert "reset reason: overflow" in SECTION


def test_canary_header_is_the_files():
    match = m.named(pattern("header-canary.yml"), "VirtualService", "hello-external-split")["spec"]["http"][0]["match"][0]
    (name, value), = match["headers"].items()
    assert f"--header '{name}: {value['exact']}'" in SECTION
    assert re.search(rf"`{re.escape(name)}: {re.escape(value['exact'])}` go to v2", SECTION)
