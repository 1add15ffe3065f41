"""What `istioctl analyze`, a working split and a secured egress need, checked on k8s/ and on
every pattern file merged over it; each check is also shown to fail on a copy broken the way
a real mistake would break it."""

from __future__ import annotations

import copy
import re

import pytest

import checks as c
import manifests as m

# k8s/ as `kubectl apply -f k8s/` leaves it, and after `kubectl apply -f <pattern>` on top.
SETS = ["k8s"] + [f"patterns/{p.name}" for p in m.pattern_files()]


def docs_of(name: str) -> list[dict]:
    base = m.load_all()
    if name == "k8s":
        return base
    return m.merged(base, m.load_file(m.K8S_DIR / name))


@pytest.fixture(scope="module")
def docs():
    return m.load_all()


@pytest.mark.parametrize("name", sorted(c.SEMANTIC_CHECKS))
@pytest.mark.parametrize("applied", SETS)
def test_check_passes(applied, name):
    assert c.SEMANTIC_CHECKS[name](docs_of(applied)) == []


def test_patterns_exist():
    assert len(m.pattern_files()) >= 6


def test_merge_replaces_by_kind_namespace_and_name(docs):
    split_copy = copy.deepcopy(split(docs))
    split_copy["spec"]["http"][0]["route"][0]["weight"] = 100
    del split_copy["spec"]["http"][0]["route"][1]
    other_namespace = copy.deepcopy(split_copy)
    other_namespace["metadata"]["namespace"] = "elsewhere"
    result = m.merged(docs, [split_copy, other_namespace])
    assert len(result) == len(docs) + 1
    assert split(result) is split_copy
    assert result[-1] is other_namespace


def test_cf_hosts_only_in_istio_yml_and_patterns(docs):
    files = {p.name: p.read_text(encoding="utf-8") for p in m.manifest_files()}
    files |= {f"patterns/{p.name}": p.read_text(encoding="utf-8") for p in m.pattern_files()}
    assert len(m.cf_hosts(docs)) == 2
    assert c.check_cf_hosts_in_one_place(files, docs) == []
    files["traffic.yml"] += f"\n# {m.cf_hosts(docs)[0]}\n"
    assert c.check_cf_hosts_in_one_place(files, docs)


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


def cf_service_entry_in_workload_namespace(docs):
    get(docs, "ServiceEntry", "hello-cf")["metadata"]["namespace"] = m.NAMESPACE


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


def split_matches_unserved_port(docs):
    split(docs)["spec"]["http"][0]["match"] = [{"port": 443}]


def gateway_wrong_selector(docs):
    get(docs, "Gateway", "hello-external-egress")["spec"]["selector"] = {"istio": "ingressgateway"}


def missing_subset(docs):
    get(docs, "DestinationRule", "egressgateway-for-hello-external")["spec"]["subsets"][0]["name"] = "other"


def subset_rule_in_gateway_namespace(docs):
    # Defined in istio-system with exportTo ".": invisible to the proxy's sidecar.
    get(docs, "DestinationRule", "egressgateway-for-hello-external")["metadata"]["namespace"] = m.GATEWAY_NAMESPACE


def gateway_subset(docs):
    return get(docs, "DestinationRule", "egressgateway-for-hello-external")["spec"]["subsets"][0]


def subset_without_tls(docs):
    del gateway_subset(docs)["trafficPolicy"]


def subset_tls_disabled(docs):
    gateway_subset(docs)["trafficPolicy"]["portLevelSettings"][0]["tls"] = {"mode": "DISABLE"}


def subset_tls_on_other_port(docs):
    gateway_subset(docs)["trafficPolicy"]["portLevelSettings"][0]["port"]["number"] = 443


def subset_sni_of_cf_host(docs):
    gateway_subset(docs)["trafficPolicy"]["portLevelSettings"][0]["tls"]["sni"] = m.cf_hosts(docs)[0]


def gateway_server_plain_http(docs):
    server = get(docs, "Gateway", "hello-external-egress")["spec"]["servers"][0]
    server["port"]["protocol"] = "HTTP"
    del server["tls"]


def gateway_server_simple_tls(docs):
    get(docs, "Gateway", "hello-external-egress")["spec"]["servers"][0]["tls"] = {"mode": "SIMPLE", "credentialName": "x"}


def cf_tls(docs, name="hello-istio-v1-tls"):
    return get(docs, "DestinationRule", name)["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]


def no_sni(docs):
    del cf_tls(docs)["sni"]


def sni_of_other_host(docs):
    cf_tls(docs, "hello-istio-v2-tls")["sni"] = m.cf_hosts(docs)[0]


def sni_without_san(docs):
    del cf_tls(docs, "hello-istio-v2-tls")["subjectAltNames"]


def san_of_other_host(docs):
    cf_tls(docs)["subjectAltNames"] = [m.cf_hosts(docs)[1]]


def san_wildcard_extra(docs):
    cf_tls(docs)["subjectAltNames"].append("*.apps.cf.example")


def insecure_skip_verify(docs):
    tls = cf_tls(docs)
    tls["insecureSkipVerify"] = True


def tls_rule_hidden_from_gateway(docs):
    get(docs, "DestinationRule", "hello-istio-v1-tls")["metadata"]["namespace"] = m.NAMESPACE


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


def split_to_port_80(docs):
    split(docs)["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = 80


def mesh_route_direct(docs):
    mesh(docs)["spec"]["http"][0]["route"][0]["destination"] = {"host": "hello.external", "port": {"number": 80}}


def mesh_no_timeout(docs):
    del mesh(docs)["spec"]["http"][0]["timeout"]


def per_try_longer_than_timeout(docs):
    mesh(docs)["spec"]["http"][0]["retries"]["perTryTimeout"] = "5s"


def cf_hosts_exported_everywhere(docs):
    get(docs, "ServiceEntry", "hello-cf")["spec"]["exportTo"] = ["*"]


def cf_hosts_export_unset(docs):
    del get(docs, "ServiceEntry", "hello-cf")["spec"]["exportTo"]


def cf_hosts_exported_to_workloads(docs):
    get(docs, "ServiceEntry", "hello-cf")["spec"]["exportTo"] = [".", m.NAMESPACE]


def split_exported_everywhere(docs):
    split(docs)["spec"]["exportTo"] = ["*"]


def stable_name_hidden(docs):
    get(docs, "ServiceEntry", "hello-external")["spec"]["exportTo"] = [m.GATEWAY_NAMESPACE]


def authz(docs):
    return get(docs, "AuthorizationPolicy", "hello-external-egress")


def authz_other_principal(docs):
    authz(docs)["spec"]["rules"][0]["from"][0]["source"]["principals"] = ["cluster.local/ns/egress-demo/sa/traffic"]


def authz_extra_principal(docs):
    authz(docs)["spec"]["rules"][0]["from"][0]["source"]["principals"].append("cluster.local/ns/egress-demo/sa/traffic")


def authz_namespace_source(docs):
    authz(docs)["spec"]["rules"][0]["from"][0]["source"] = {"namespaces": [m.NAMESPACE]}


def authz_no_from(docs):
    del authz(docs)["spec"]["rules"][0]["from"]


def authz_no_hosts(docs):
    del authz(docs)["spec"]["rules"][0]["to"]


def authz_other_host(docs):
    authz(docs)["spec"]["rules"][0]["to"][0]["operation"]["hosts"] = ["hello.internal"]


def authz_deny(docs):
    authz(docs)["spec"]["action"] = "DENY"


def authz_missing(docs):
    docs.remove(authz(docs))


def authz_wrong_selector(docs):
    authz(docs)["spec"]["selector"]["matchLabels"] = {"istio": "ingressgateway"}


def proxy_runs_as_other_account(docs):
    # The policy names app-that-calls-externally; the pods would present another identity.
    get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["serviceAccountName"] = "default"


def proxy_in_other_namespace(docs):
    for kind in ("Deployment", "ServiceAccount"):
        get(docs, kind, m.PROXY_DEPLOYMENT)["metadata"]["namespace"] = "other"


def policy(docs, name):
    return get(docs, "NetworkPolicy", name)


def no_baseline(docs):
    docs.remove(policy(docs, "egress-baseline"))


def baseline_allows_everything(docs):
    policy(docs, "egress-baseline")["spec"]["egress"].append({})


def baseline_allows_internet(docs):
    policy(docs, "egress-baseline")["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]})


def baseline_allows_gateway(docs):
    rules = policy(docs, "egress-baseline")["spec"]["egress"]
    rules.append(copy.deepcopy(policy(docs, m.PROXY_DEPLOYMENT)["spec"]["egress"][0]))


def baseline_any_dns_port(docs):
    del policy(docs, "egress-baseline")["spec"]["egress"][0]["ports"]


def proxy_no_gateway(docs):
    proxy_policy = policy(docs, m.PROXY_DEPLOYMENT)
    proxy_policy["spec"]["policyTypes"].remove("Egress")
    del proxy_policy["spec"]["egress"]


def caller_reaches_gateway(docs):
    policy(docs, m.CALLER_DEPLOYMENT)["spec"]["egress"].append(copy.deepcopy(policy(docs, m.PROXY_DEPLOYMENT)["spec"]["egress"][0]))


def caller_no_proxy(docs):
    policy(docs, m.CALLER_DEPLOYMENT)["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] = {"app": "nothing"}


def gateway_other_port(docs):
    policy(docs, m.PROXY_DEPLOYMENT)["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 15000})


def no_dns_for_anyone(docs):
    del policy(docs, "egress-baseline")["spec"]["egress"][0]


def abort_without_percentage(docs):
    del mesh(docs)["spec"]["http"][0]["fault"]["abort"]["percentage"]


def delay_on_sidecar(docs):
    mesh(docs)["spec"]["http"][0]["fault"]["delay"] = {"fixedDelay": "2s", "percentage": {"value": 50}}


def aborts_on_both_hops(docs):
    split(docs)["spec"]["http"][0]["fault"] = copy.deepcopy(mesh(docs)["spec"]["http"][0]["fault"])


def mirror_at_gateway(docs):
    route = split(docs)["spec"]["http"][0]
    route["mirror"] = {"host": m.cf_hosts(docs)[1], "port": {"number": 443}}
    route["mirrorPercentage"] = {"value": 50}


def mirror_to_same_gateway_port(docs):
    route = mesh(docs)["spec"]["http"][0]
    route["mirror"] = copy.deepcopy(route["route"][0]["destination"])
    route["mirrorPercentage"] = {"value": 50}


def mirror_without_gateway_route(docs):
    route = mesh(docs)["spec"]["http"][0]
    route["mirror"] = copy.deepcopy(route["route"][0]["destination"])
    route["mirror"]["port"]["number"] = 443
    route["mirrorPercentage"] = {"value": 50}


def address_in_istio_range(docs):
    get(docs, "Deployment", m.PROXY_DEPLOYMENT)["spec"]["template"]["spec"]["hostAliases"][0]["ip"] = "240.240.0.80"


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
    ("namespace", other_namespace, "namespace is default, not istio-system"),
    ("namespace", cf_service_entry_in_workload_namespace, "namespace is egress-demo, not istio-system"),
    ("hosts_declared", undeclared_destination, "hello-istio-v3.apps.cf.example is declared by no"),
    ("hosts_declared", undeclared_stable_name, "host hello.external is declared by no"),
    ("egress_gateway_ports", gateway_port_81, "port 81"),
    ("egress_gateway_ports", gateway_server_port_8080, "server port 8080"),
    ("weights", weights_90, "add up to 90"),
    ("gateway_binding", wrong_gateway_name, "gateway istio-egressgateway not found"),
    ("gateway_binding", gateway_other_host, "is not served by"),
    ("gateway_binding", gateway_wrong_selector, "selector"),
    ("gateway_binding", split_matches_unserved_port, "matches port 443"),
    ("subsets", missing_subset, "subset hello-external"),
    ("subsets", subset_rule_in_gateway_namespace, "defined by no DestinationRule proxies in egress-demo get"),
    ("gateway_hop_mtls", subset_without_tls, "TLS mode is None, not ISTIO_MUTUAL"),
    ("gateway_hop_mtls", subset_tls_disabled, "TLS mode is DISABLE"),
    ("gateway_hop_mtls", subset_tls_on_other_port, "not ISTIO_MUTUAL"),
    ("gateway_hop_mtls", subset_rule_in_gateway_namespace, "not ISTIO_MUTUAL"),
    ("gateway_hop_mtls", subset_sni_of_cf_host, "chosen by SNI"),
    ("gateway_hop_mtls", gateway_server_plain_http, "not HTTPS with ISTIO_MUTUAL"),
    ("gateway_hop_mtls", gateway_server_simple_tls, "not HTTPS with ISTIO_MUTUAL"),
    ("gateway_hop_mtls", gateway_server_port_8080, "no egress Gateway server on port 80"),
    ("tls_origination", no_sni, "sni None"),
    ("tls_origination", sni_of_other_host, "tls sni"),
    ("tls_origination", no_tls_rule, "originates TLS"),
    ("tls_origination", tls_disabled, "expected SIMPLE"),
    ("tls_origination", sni_without_san, "the certificate's name is not checked"),
    ("tls_origination", san_of_other_host, "accept names other than"),
    ("tls_origination", san_wildcard_extra, "accept names other than"),
    ("tls_origination", insecure_skip_verify, "insecureSkipVerify"),
    ("tls_origination", tls_rule_hidden_from_gateway, "no DestinationRule the egress gateway gets"),
    ("export_scope", cf_hosts_exported_everywhere, "could call it without the gateway"),
    ("export_scope", cf_hosts_export_unset, "could call it without the gateway"),
    ("export_scope", cf_hosts_exported_to_workloads, "could call it without the gateway"),
    ("export_scope", split_exported_everywhere, "exportTo ['*']"),
    ("export_scope", stable_name_hidden, "hello.external is not visible to the sidecars"),
    ("authorization", authz_other_principal, "not only cluster.local/ns/egress-demo/sa/app-that-calls-externally"),
    ("authorization", authz_extra_principal, "sa/traffic"),
    ("authorization", authz_namespace_source, "namespaces"),
    ("authorization", authz_no_from, "any source"),
    ("authorization", authz_no_hosts, "admits any host"),
    ("authorization", authz_other_host, "no AuthorizationPolicy rule admits it"),
    ("authorization", authz_deny, "expected ALLOW"),
    ("authorization", authz_missing, "no AuthorizationPolicy"),
    ("authorization", authz_wrong_selector, "no AuthorizationPolicy"),
    ("authorization", proxy_runs_as_other_account, "not only cluster.local/ns/egress-demo/sa/default"),
    ("authorization", proxy_in_other_namespace, "not only cluster.local/ns/other/sa/app-that-calls-externally"),
    ("egress_network_policies", no_baseline, "no egress NetworkPolicy selects every pod"),
    ("egress_network_policies", baseline_allows_everything, "allows every destination"),
    ("egress_network_policies", baseline_allows_internet, "none of DNS, istiod"),
    ("egress_network_policies", baseline_allows_gateway, "expected DNS and istiod only"),
    ("egress_network_policies", baseline_any_dns_port, "allows every port"),
    ("egress_network_policies", proxy_no_gateway, "do not let it reach the egress gateway"),
    ("egress_network_policies", caller_reaches_gateway, "reach the egress gateway, which it does not need"),
    ("egress_network_policies", caller_no_proxy, "do not let it reach the proxy"),
    ("egress_network_policies", gateway_other_port, "15000"),
    ("egress_network_policies", no_dns_for_anyone, "do not let it reach DNS"),
    ("split", no_host_header, "does not set Host"),
    ("split", host_header_of_other_host, "does not set Host"),
    ("split", route_level_authority, "rewrite.authority"),
    ("split", mirror_at_gateway, "mirrors at the gateway"),
    ("faults", abort_without_percentage, "never fires"),
    ("faults", delay_on_sidecar, "put the delay on the gateway route"),
    ("faults", aborts_on_both_hops, "compound"),
    ("split", split_to_port_80, "not on port 443"),
    ("mesh_route", mesh_route_direct, "egress gateway subset on port 80"),
    ("mesh_route", mesh_no_timeout, "no timeout"),
    ("mesh_route", per_try_longer_than_timeout, "perTryTimeout"),
    ("mesh_route", mirror_to_same_gateway_port, "its other port"),
    ("mesh_route", mirror_without_gateway_route, "no gateway route matches port 443"),
    ("proxy_upstream", upstream_is_cf_host, "not the stable name"),
    ("proxy_upstream", upstream_https, "not plain http"),
    ("proxy_upstream", upstream_port_8080, "port 8080 is not declared"),
    ("proxy_upstream", no_host_alias, "hostAliases"),
    ("proxy_upstream", address_in_istio_range, "a range Istio allocates"),
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


@pytest.mark.parametrize("check, mutate, expected", NEGATIVES, ids=[f"{check}-{f.__name__}" for check, f, _ in NEGATIVES])
def test_check_catches(docs, check, mutate, expected):
    broken = copy.deepcopy(docs)
    mutate(broken)
    problems = c.SEMANTIC_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


def test_every_check_has_a_negative_test():
    assert {check for check, _, _ in NEGATIVES} == set(c.SEMANTIC_CHECKS)


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



# ------------------------------------------------------------------ negative, on patterns


def drop_copies_server(docs):
    servers = get(docs, "Gateway", "hello-external-egress")["spec"]["servers"]
    servers[:] = [s for s in servers if s["port"]["number"] != 443]


def authz_without_shadow_host(docs):
    authz(docs)["spec"]["rules"][0]["to"][0]["operation"]["hosts"] = [m.STABLE_HOST]


def subset_without_copies_port(docs):
    settings = gateway_subset(docs)["trafficPolicy"]["portLevelSettings"]
    settings[:] = [s for s in settings if s["port"]["number"] != 443]


def pool_rule_without_san(docs):
    del cf_tls(docs, "hello-istio-v2-tls")["subjectAltNames"]


def canary_without_host_header(docs):
    del split(docs)["spec"]["http"][0]["route"][0]["headers"]


PATTERN_NEGATIVES = [
    ("patterns/mirroring.yml", "gateway_hop_mtls", drop_copies_server, "no egress Gateway server on port 443"),
    ("patterns/mirroring.yml", "authorization", authz_without_shadow_host, "hello.external-shadow but no AuthorizationPolicy"),
    ("patterns/mirroring.yml", "gateway_hop_mtls", subset_without_copies_port, "port 443: the sidecar's TLS mode is None"),
    ("patterns/circuit-breaking.yml", "tls_origination", pool_rule_without_san, "name is not checked"),
    ("patterns/header-canary.yml", "split", canary_without_host_header, "does not set Host"),
]


@pytest.mark.parametrize(
    "applied, check, mutate, expected", PATTERN_NEGATIVES, ids=[f"{a}-{f.__name__}" for a, _, f, _ in PATTERN_NEGATIVES]
)
def test_check_catches_on_pattern(applied, check, mutate, expected):
    broken = copy.deepcopy(docs_of(applied))
    assert c.SEMANTIC_CHECKS[check](broken) == []
    mutate(broken)
    problems = c.SEMANTIC_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems
