"""What `istioctl analyze` and a working split need, checked on k8s/; each check is
also shown to fail on a copy broken the way a real mistake would break it."""

from __future__ import annotations

import copy
import re

import pytest

import manifests as m


@pytest.fixture(scope="module")
def docs():
    return m.load_all()


@pytest.mark.parametrize("name", sorted(m.SEMANTIC_CHECKS))
def test_check_passes(docs, name):
    assert m.SEMANTIC_CHECKS[name](docs) == []


def test_cf_hosts_only_in_istio_yml(docs):
    files = {p.name: p.read_text(encoding="utf-8") for p in m.manifest_files()}
    assert len(m.cf_hosts(docs)) == 2
    assert m.check_cf_hosts_in_one_place(files, docs) == []
    files["traffic.yml"] += f"\n# {m.cf_hosts(docs)[0]}\n"
    assert m.check_cf_hosts_in_one_place(files, docs)


# ------------------------------------------------------------------ negative


def get(docs, kind, name):
    doc = m.named(docs, kind, name)
    assert doc is not None, f"{kind}/{name} missing"
    return doc


def split(docs):
    return get(docs, "VirtualService", "hello-external-split")


def mesh(docs):
    return get(docs, "VirtualService", "hello-external-via-egress")


def proxy_container(docs):
    return get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]


def caller_container(docs):
    return get(docs, "Deployment", m.CALLER_DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]


def set_env(container, name, value):
    next(e for e in container["env"] if e["name"] == name)["value"] = value


def drop_label(docs):
    del get(docs, "DestinationRule", "hello-istio-v2-tls")["metadata"]["labels"]["demo"]


def drop_pod_version(docs):
    del get(docs, "Deployment", m.CALLER_DEPLOYMENT)["spec"]["template"]["metadata"]["labels"]["version"]


def no_injection(docs):
    del get(docs, "Namespace", m.NAMESPACE)["metadata"]["labels"]["istio-injection"]


def other_namespace(docs):
    get(docs, "Gateway", "hello-external-egress")["metadata"]["namespace"] = "default"


def undeclared_destination(docs):
    split(docs)["spec"]["http"][0]["route"][1]["destination"]["host"] = "hello-istio-v3.apps.cf.example"


def undeclared_stable_name(docs):
    docs.remove(get(docs, "ServiceEntry", "hello-external"))


def gateway_port_81(docs):
    mesh(docs)["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = 81


def gateway_server_port_8080(docs):
    get(docs, "Gateway", "hello-external-egress")["spec"]["servers"][0]["port"]["number"] = 8080


def weights_90(docs):
    split(docs)["spec"]["http"][0]["route"][0]["weight"] = 20


def wrong_gateway_name(docs):
    split(docs)["spec"]["gateways"] = ["istio-egressgateway"]


def gateway_other_host(docs):
    get(docs, "Gateway", "hello-external-egress")["spec"]["servers"][0]["hosts"] = ["hello.internal"]


def gateway_wrong_selector(docs):
    get(docs, "Gateway", "hello-external-egress")["spec"]["selector"] = {"istio": "ingressgateway"}


def missing_subset(docs):
    get(docs, "DestinationRule", "egressgateway-for-hello-external")["spec"]["subsets"][0]["name"] = "other"


def no_sni(docs):
    del get(docs, "DestinationRule", "hello-istio-v1-tls")["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["sni"]


def sni_of_other_host(docs):
    tls = get(docs, "DestinationRule", "hello-istio-v2-tls")["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]
    tls["sni"] = m.cf_hosts(docs)[0]


def no_tls_rule(docs):
    docs.remove(get(docs, "DestinationRule", "hello-istio-v2-tls"))


def tls_disabled(docs):
    get(docs, "DestinationRule", "hello-istio-v1-tls")["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"] = "DISABLE"


def no_host_header(docs):
    del split(docs)["spec"]["http"][0]["route"][0]["headers"]


def host_header_of_other_host(docs):
    route = split(docs)["spec"]["http"][0]["route"]
    route[1]["headers"]["request"]["set"]["host"] = route[0]["destination"]["host"]


def route_level_authority(docs):
    split(docs)["spec"]["http"][0]["rewrite"] = {"authority": "x.example"}


def fault_on_gateway(docs):
    split(docs)["spec"]["http"][0]["fault"] = copy.deepcopy(mesh(docs)["spec"]["http"][0]["fault"])


def split_to_port_80(docs):
    split(docs)["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = 80


def mesh_route_direct(docs):
    mesh(docs)["spec"]["http"][0]["route"][0]["destination"] = {"host": "hello.external", "port": {"number": 80}}


def mesh_no_timeout(docs):
    del mesh(docs)["spec"]["http"][0]["timeout"]


def per_try_longer_than_timeout(docs):
    mesh(docs)["spec"]["http"][0]["retries"]["perTryTimeout"] = "5s"


def hidden_from_gateway(docs):
    get(docs, "DestinationRule", "hello-istio-v1-tls")["spec"]["exportTo"] = ["."]


def upstream_is_cf_host(docs):
    set_env(proxy_container(docs), "UPSTREAM_URL", f"http://{m.cf_hosts(docs)[0]}/")


def upstream_https(docs):
    set_env(proxy_container(docs), "UPSTREAM_URL", "https://hello.external/")


def upstream_port_8080(docs):
    set_env(proxy_container(docs), "UPSTREAM_URL", "http://hello.external:8080/")


def no_host_alias(docs):
    del get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["hostAliases"]


def caller_calls_deployment_name(docs):
    set_env(caller_container(docs), "URL", "http://app-that-calls-externally/")


def caller_wrong_port(docs):
    set_env(caller_container(docs), "URL", "http://service-that-calls-externally:8080/")


def service_port_unnamed(docs):
    get(docs, "Service", m.PROXY_SERVICE)["spec"]["ports"][0]["name"] = "web"


def service_wrong_target(docs):
    get(docs, "Service", m.PROXY_SERVICE)["spec"]["ports"][0]["targetPort"] = "admin"


def service_wrong_selector(docs):
    get(docs, "Service", m.PROXY_SERVICE)["spec"]["selector"] = {"app": "traffic"}


def upstream_timeout_below_mesh(docs):
    set_env(proxy_container(docs), "UPSTREAM_TIMEOUT", "2s")


def caller_timeout_below_proxy(docs):
    set_env(caller_container(docs), "TIMEOUT", "4s")


def grace_below_drain(docs):
    get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5


def root_user(docs):
    proxy_container(docs)["securityContext"]["runAsUser"] = 0


def writable_root(docs):
    caller_container(docs)["securityContext"]["readOnlyRootFilesystem"] = False


def escalation(docs):
    del caller_container(docs)["securityContext"]["allowPrivilegeEscalation"]


def capabilities_kept(docs):
    proxy_container(docs)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]


def no_seccomp(docs):
    del proxy_container(docs)["securityContext"]["seccompProfile"]
    del get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]


def no_limits(docs):
    del caller_container(docs)["resources"]["limits"]


def no_probe(docs):
    del proxy_container(docs)["readinessProbe"]


def extra_container_unhardened(docs):
    spec = get(docs, "Deployment", m.CALLER_DEPLOYMENT)["spec"]["template"]["spec"]
    spec["containers"].append({"name": "debug", "image": "busybox"})


NEGATIVES = [
    ("common_label", drop_label, "label demo=istio-external-services missing"),
    ("common_label", drop_pod_version, "pod label version missing"),
    ("namespace", no_injection, "istio-injection"),
    ("namespace", other_namespace, "namespace is not egress-demo"),
    ("hosts_declared", undeclared_destination, "hello-istio-v3.apps.cf.example is declared by no"),
    ("hosts_declared", undeclared_stable_name, "host hello.external is declared by no"),
    ("egress_gateway_ports", gateway_port_81, "port 81"),
    ("egress_gateway_ports", gateway_server_port_8080, "server port 8080"),
    ("weights", weights_90, "add up to 90"),
    ("gateway_binding", wrong_gateway_name, "gateway istio-egressgateway not found"),
    ("gateway_binding", gateway_other_host, "is not served by"),
    ("gateway_binding", gateway_wrong_selector, "selector"),
    ("subsets", missing_subset, "subset hello-external"),
    ("tls_origination", no_sni, "sni None"),
    ("tls_origination", sni_of_other_host, "tls sni"),
    ("tls_origination", no_tls_rule, "no DestinationRule originates TLS"),
    ("tls_origination", tls_disabled, "expected SIMPLE"),
    ("split", no_host_header, "does not set Host"),
    ("split", host_header_of_other_host, "does not set Host"),
    ("split", route_level_authority, "rewrite.authority"),
    ("split", fault_on_gateway, "compounds"),
    ("split", split_to_port_80, "not on port 443"),
    ("mesh_route", mesh_route_direct, "egress gateway subset on port 80"),
    ("mesh_route", mesh_no_timeout, "no timeout"),
    ("mesh_route", per_try_longer_than_timeout, "perTryTimeout"),
    ("not_hidden", hidden_from_gateway, "hides it from the egress gateway"),
    ("proxy_upstream", upstream_is_cf_host, "not the stable name"),
    ("proxy_upstream", upstream_https, "not plain http"),
    ("proxy_upstream", upstream_port_8080, "port 8080 is not declared"),
    ("proxy_upstream", no_host_alias, "hostAliases"),
    ("caller_url", caller_calls_deployment_name, "is not the Service"),
    ("caller_url", caller_wrong_port, "no port 8080"),
    ("caller_url", service_port_unnamed, "not named http"),
    ("caller_url", service_wrong_target, "targetPort admin"),
    ("caller_url", service_wrong_selector, "does not select"),
    ("timeouts_chain", upstream_timeout_below_mesh, "do not hold"),
    ("timeouts_chain", caller_timeout_below_proxy, "do not hold"),
    ("grace_period", grace_below_drain, "does not exceed DRAIN_TIMEOUT"),
    ("security", root_user, "not a numeric non-root UID"),
    ("security", writable_root, "readOnlyRootFilesystem"),
    ("security", escalation, "allowPrivilegeEscalation"),
    ("security", capabilities_kept, "drop ALL"),
    ("security", no_seccomp, "RuntimeDefault"),
    ("security", no_limits, "no cpu limit"),
    ("security", no_probe, "probe"),
    ("security", extra_container_unhardened, "container debug"),
]


@pytest.mark.parametrize("check, mutate, expected", NEGATIVES, ids=[f"{c}-{f.__name__}" for c, f, _ in NEGATIVES])
def test_check_catches(docs, check, mutate, expected):
    broken = copy.deepcopy(docs)
    mutate(broken)
    problems = m.SEMANTIC_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


def test_every_check_has_a_negative_test():
    assert {c for c, _, _ in NEGATIVES} == set(m.SEMANTIC_CHECKS)


# ------------------------------------------------------------------ docs agree


def expected_shares(docs) -> dict[str, int]:
    """Shares of the caller's log lines the policy in istio.yml implies."""
    route = mesh(docs)["spec"]["http"][0]
    abort = route["fault"]["abort"]["percentage"]["value"] / 100
    weights = {d["destination"]["host"]: d["weight"] / 100 for d in split(docs)["spec"]["http"][0]["route"]}
    shares = {"abort": round(abort * 100)}
    for host, weight in weights.items():
        shares[host] = round((1 - abort) * weight * 100)
    return shares


def test_readme_states_the_shares_the_policy_gives(docs):
    shares = expected_shares(docs)
    v1, v2 = m.cf_hosts(docs)
    readme = (m.K8S_DIR / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"≈ ?(\d+)% `fault filter abort`, (\d+)% v1, (\d+)% v2", readme)
    assert stated, "k8s/README.md states no expected shares"
    assert [int(x) for x in stated.groups()] == [shares["abort"], shares[v1], shares[v2]]


def test_readme_names_the_policy_numbers(docs):
    readme = (m.K8S_DIR / "README.md").read_text(encoding="utf-8")
    route = mesh(docs)["spec"]["http"][0]
    weights = [str(d["weight"]) for d in split(docs)["spec"]["http"][0]["route"]]
    for text in [route["timeout"], str(route["fault"]["abort"]["httpStatus"]), "/".join(weights)]:
        assert text in readme, f"k8s/README.md does not mention {text}"

