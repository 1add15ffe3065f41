"""What a working, secured egress needs, checked on a set of documents (k8s/, or k8s/ with a
pattern merged over it), as istiod would read them.

Each check takes the list of documents and returns a list of problems (empty = fine), so
tests can run it on the real files and on copies broken the way a real mistake would.
"""

from __future__ import annotations

import ipaddress
from typing import Callable
from urllib.parse import urlsplit

from manifests import (
    CALLER_DEPLOYMENT,
    COMMON_LABEL,
    DNS_NAMESPACE,
    DNS_SELECTOR,
    EGRESS_GATEWAY_HOST,
    EGRESS_GATEWAY_PORTS,
    EGRESS_GATEWAY_SELECTOR,
    EGRESS_GATEWAY_TARGET_PORTS,
    GATEWAY_NAMESPACE,
    ISTIOD_PORT,
    ISTIOD_SELECTOR,
    NAMESPACE,
    PROXY_DEPLOYMENT,
    PROXY_SERVICE,
    STABLE_HOST,
    Doc,
    cf_hosts,
    containers,
    destination_rule_for,
    destinations,
    egress_gateways,
    env_value,
    gateway_refs,
    gateway_servers,
    gateway_virtual_services,
    host_matches,
    http_routes,
    mesh_virtual_services,
    mirrors,
    named,
    namespace_of,
    of_kind,
    parse_duration,
    pod_labels,
    pod_spec,
    ref,
    resolve_gateway,
    selects,
    service_account_principal,
    service_hosts,
    subset_tls,
    visible_in,
)


def check_common_label(docs: list[Doc]) -> list[str]:
    key, value = COMMON_LABEL
    problems = []
    for doc in docs:
        if (doc.get("metadata", {}).get("labels") or {}).get(key) != value:
            problems.append(f"{ref(doc)}: label {key}={value} missing")
        if pod_spec(doc) is not None:
            labels = pod_labels(doc)
            if labels.get(key) != value:
                problems.append(f"{ref(doc)}: pod label {key}={value} missing")
            for required in ("app", "version"):
                if not labels.get(required):
                    problems.append(f"{ref(doc)}: pod label {required} missing")
    return problems


def _gateway_side(doc: Doc, docs: list[Doc]) -> bool:
    """What only the egress gateway uses: Gateways, policies on it, the split, the Cloud
    Foundry hosts and their TLS settings."""
    kind = doc.get("kind")
    if kind in {"Gateway", "AuthorizationPolicy"}:
        return True
    if kind == "VirtualService":
        return bool(gateway_refs(doc))
    external = set(cf_hosts(docs))
    if kind == "ServiceEntry":
        return bool(set(doc["spec"].get("hosts", [])) & external)
    if kind == "DestinationRule":
        return doc["spec"].get("host") in external
    return False


def check_namespace(docs: list[Doc]) -> list[str]:
    """Workloads and what their sidecars use in egress-demo; the gateway's side in its namespace."""
    problems = []
    ns = named(docs, "Namespace", NAMESPACE)
    if ns is None:
        problems.append(f"Namespace/{NAMESPACE} missing")
    elif (ns["metadata"].get("labels") or {}).get("istio-injection") != "enabled":
        problems.append(f"Namespace/{NAMESPACE}: label istio-injection=enabled missing (no sidecars)")
    for doc in docs:
        if doc.get("kind") == "Namespace":
            continue
        want = GATEWAY_NAMESPACE if _gateway_side(doc, docs) else NAMESPACE
        if namespace_of(doc) != want:
            problems.append(f"{ref(doc)}: namespace is {namespace_of(doc)}, not {want}")
    return problems


def _known_in(docs: list[Doc], namespace: str) -> set[str]:
    """Hosts a proxy of `namespace` knows: visible ServiceEntries, the Services, the gateway."""
    hosts = {
        h for se in of_kind(docs, "ServiceEntry") if visible_in(se, namespace) for h in se["spec"].get("hosts", [])
    }
    return hosts | service_hosts(docs) | {EGRESS_GATEWAY_HOST}


def _consumer_namespace(docs: list[Doc], vs: Doc) -> str:
    """Whose proxies apply a VirtualService: its gateway's namespace, or its own for `mesh`."""
    for g in gateway_refs(vs):
        gw = resolve_gateway(docs, vs, g)
        if gw is not None:
            return GATEWAY_NAMESPACE if gw["spec"].get("selector") == EGRESS_GATEWAY_SELECTOR else namespace_of(gw)
    return namespace_of(vs)


def check_hosts_declared(docs: list[Doc]) -> list[str]:
    """REGISTRY_ONLY: every host a proxy calls or routes to is known to that proxy."""
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        consumer = _consumer_namespace(docs, vs)
        known = _known_in(docs, consumer)
        if not visible_in(vs, consumer):
            problems.append(f"{ref(vs)}: exportTo hides it from the proxies that apply it (namespace {consumer})")
        if not gateway_refs(vs):
            for host in vs["spec"].get("hosts", []):
                if host not in known:
                    problems.append(f"{ref(vs)}: host {host} is declared by no ServiceEntry or Service visible in {consumer}")
        targets = [dest for _, dest in destinations(vs)] + [m for r in http_routes(vs) for m, _ in mirrors(r)]
        for dest in targets:
            if dest.get("host") not in known:
                problems.append(
                    f"{ref(vs)}: destination host {dest.get('host')} is declared by no ServiceEntry or Service visible in {consumer}"
                )
    return problems


def check_egress_gateway_ports(docs: list[Doc]) -> list[str]:
    problems = []
    for gw in of_kind(docs, "Gateway"):
        for server in gw["spec"].get("servers", []):
            number = server.get("port", {}).get("number")
            if number not in EGRESS_GATEWAY_PORTS:
                problems.append(f"{ref(gw)}: server port {number}: the egress gateway listens on 80 and 443 only")
    for vs in of_kind(docs, "VirtualService"):
        targets = [dest for _, dest in destinations(vs)] + [m for r in http_routes(vs) for m, _ in mirrors(r)]
        for dest in targets:
            if dest.get("host") == EGRESS_GATEWAY_HOST:
                number = dest.get("port", {}).get("number")
                if number not in EGRESS_GATEWAY_PORTS:
                    problems.append(f"{ref(vs)}: route to egress gateway port {number}: only 80 and 443 exist")
    return problems


def check_weights(docs: list[Doc]) -> list[str]:
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for i, route in enumerate(http_routes(vs)):
            entries = route.get("route") or []
            if len(entries) > 1:
                total = sum(e.get("weight", 0) for e in entries)
                if total != 100:
                    problems.append(f"{ref(vs)}: http[{i}] weights add up to {total}, not 100")
            for e in entries:
                if "weight" in e and not 0 <= e["weight"] <= 100:
                    problems.append(f"{ref(vs)}: http[{i}] weight {e['weight']} out of 0..100")
    return problems


def check_gateway_binding(docs: list[Doc]) -> list[str]:
    """Gateway-bound VirtualServices name existing egress Gateways whose servers accept their
    hosts on the ports their routes match."""
    problems = []
    for vs in gateway_virtual_services(docs):
        for gateway_ref in gateway_refs(vs):
            gw = resolve_gateway(docs, vs, gateway_ref)
            if gw is None:
                problems.append(f"{ref(vs)}: gateway {gateway_ref} not found")
                continue
            if gw["spec"].get("selector") != EGRESS_GATEWAY_SELECTOR:
                problems.append(f"{ref(gw)}: selector is not istio: egressgateway")
            server_hosts = [h for s in gw["spec"].get("servers", []) for h in s.get("hosts", [])]
            for host in vs["spec"].get("hosts", []):
                if not any(host_matches(p, host) for p in server_hosts):
                    problems.append(f"{ref(vs)}: host {host} is not served by {ref(gw)} (hosts {server_hosts})")
            ports = {s.get("port", {}).get("number") for s in gw["spec"].get("servers", [])}
            for i, route in enumerate(http_routes(vs)):
                for match in route.get("match") or []:
                    if match.get("port") is not None and match["port"] not in ports:
                        problems.append(f"{ref(vs)}: http[{i}] matches port {match['port']}, which {ref(gw)} has no server for")
    for gw in of_kind(docs, "Gateway"):
        gw_hosts = {h.rpartition("/")[2] for s in gw["spec"].get("servers", []) for h in s.get("hosts", [])}
        bound = {
            h
            for vs in gateway_virtual_services(docs)
            for g in gateway_refs(vs)
            if resolve_gateway(docs, vs, g) is gw
            for h in vs["spec"].get("hosts", [])
        }
        for host in sorted(gw_hosts - bound):
            problems.append(f"{ref(gw)}: host {host} has no VirtualService bound to this gateway")
    return problems


def check_subsets(docs: list[Doc]) -> list[str]:
    """Every subset a route or mirror names is defined by the DestinationRule its proxy gets."""
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        consumer = _consumer_namespace(docs, vs)
        targets = [dest for _, dest in destinations(vs)] + [m for r in http_routes(vs) for m, _ in mirrors(r)]
        for dest in targets:
            subset = dest.get("subset")
            if subset is None:
                continue
            dr = destination_rule_for(docs, dest.get("host"), consumer)
            if dr is None or not any(s.get("name") == subset for s in dr["spec"].get("subsets", [])):
                problems.append(
                    f"{ref(vs)}: subset {subset} of {dest.get('host')} is defined by no DestinationRule proxies in {consumer} get"
                )
    return problems


def check_gateway_hop_mtls(docs: list[Doc]) -> list[str]:
    """ISTIO_MUTUAL on both sides of the sidecar -> egress gateway hop: the subset the
    sidecar uses originates the mesh's mTLS with sni = the stable name (automatic mTLS does
    not apply: the egress gateway carries no tlsMode=istio label), and the Gateway server on
    that port terminates it (HTTPS, ISTIO_MUTUAL) for the stable name."""
    problems = []
    for vs in mesh_virtual_services(docs):
        consumer = namespace_of(vs)
        for i, route in enumerate(http_routes(vs)):
            targets = [dest for _, dest in destinations({"spec": {"http": [route]}})] + [m for m, _ in mirrors(route)]
            for dest in targets:
                if dest.get("host") != EGRESS_GATEWAY_HOST:
                    continue
                port = dest.get("port", {}).get("number")
                dr = destination_rule_for(docs, EGRESS_GATEWAY_HOST, consumer)
                tls = subset_tls(dr, dest.get("subset"), port) if dr else None
                where = f"{ref(vs)}: http[{i}] to the egress gateway port {port}"
                if tls is None or tls.get("mode") != "ISTIO_MUTUAL":
                    mode = None if tls is None else tls.get("mode")
                    problems.append(f"{where}: the sidecar's TLS mode is {mode}, not ISTIO_MUTUAL (plain text to the gateway)")
                elif tls.get("sni") != STABLE_HOST:
                    problems.append(f"{where}: sni {tls.get('sni')!r}, not {STABLE_HOST!r} (the gateway's server is chosen by SNI)")
                servers = [
                    s
                    for gw in egress_gateways(docs)
                    for s in gateway_servers(gw, port)
                    if any(host_matches(h, STABLE_HOST) for h in s.get("hosts", []))
                ]
                if not servers:
                    problems.append(f"{where}: no egress Gateway server on port {port} for {STABLE_HOST}")
                for s in servers:
                    if s["port"].get("protocol") != "HTTPS" or (s.get("tls") or {}).get("mode") != "ISTIO_MUTUAL":
                        problems.append(
                            f"{where}: the Gateway server {s['port'].get('name')} is {s['port'].get('protocol')} "
                            f"with tls {(s.get('tls') or {}).get('mode')}, not HTTPS with ISTIO_MUTUAL"
                        )
    return problems


def check_tls_origination(docs: list[Doc]) -> list[str]:
    """Each Cloud Foundry host: HTTPS on 443, and the DestinationRule the egress gateway gets
    originates TLS that checks the route's name: subjectAltNames = the host (with sni = the
    host), or neither sni nor subjectAltNames (istiod's automatic SNI and SAN validation).
    An sni without subjectAltNames checks the chain only."""
    problems = []
    for se in of_kind(docs, "ServiceEntry"):
        for host in se["spec"].get("hosts", []):
            if host == STABLE_HOST:
                continue
            ports = [p for p in se["spec"].get("ports", []) if p.get("protocol") == "HTTPS"]
            if not ports:
                problems.append(f"{ref(se)}: {host} declares no HTTPS port")
            for port in ports:
                where = f"{host}:{port['number']}"
                dr = destination_rule_for(docs, host, GATEWAY_NAMESPACE)
                tls = subset_tls(dr, None, port["number"]) if dr else None
                if tls is None:
                    problems.append(f"{where}: no DestinationRule the egress gateway gets originates TLS")
                    continue
                if tls.get("mode") != "SIMPLE":
                    problems.append(f"{where}: tls mode {tls.get('mode')}, expected SIMPLE")
                if tls.get("insecureSkipVerify"):
                    problems.append(f"{where}: insecureSkipVerify turns the certificate check off")
                sni, sans = tls.get("sni"), tls.get("subjectAltNames")
                if sni is None and not sans:
                    continue  # automatic SNI and SAN validation from the Host header
                if sni != host:
                    problems.append(f"{where}: tls sni {sni!r}, expected {host!r}")
                if not sans:
                    problems.append(f"{where}: sni without subjectAltNames: the certificate's name is not checked")
                elif set(sans) != {host}:
                    problems.append(f"{where}: subjectAltNames {sans} accept names other than {host!r}")
    return problems


def check_export_scope(docs: list[Doc]) -> list[str]:
    """Each half visible only where it is used: the Cloud Foundry hosts, their TLS settings
    and the split only in the gateway's namespace, the stable name's resources only in the
    proxy's namespace. Under REGISTRY_ONLY no sidecar can then call a Cloud Foundry host."""
    problems = []
    for doc in docs:
        if not doc.get("apiVersion", "").startswith("networking.istio.io/") or doc.get("kind") == "Gateway":
            continue
        export_to = (doc.get("spec") or {}).get("exportTo")
        if export_to != ["."]:
            problems.append(f"{ref(doc)}: exportTo {export_to}, expected ['.'] (visible only in {namespace_of(doc)})")
    for host in cf_hosts(docs):
        if host in _known_in(docs, NAMESPACE):
            problems.append(f"{host} is visible to the sidecars of {NAMESPACE}: they could call it without the gateway")
        if host not in _known_in(docs, GATEWAY_NAMESPACE):
            problems.append(f"{host} is not visible to the egress gateway ({GATEWAY_NAMESPACE})")
    if STABLE_HOST not in _known_in(docs, NAMESPACE):
        problems.append(f"{STABLE_HOST} is not visible to the sidecars of {NAMESPACE}")
    return problems


def _proxy_principal(docs: list[Doc]) -> tuple[str | None, list[str]]:
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    if proxy is None:
        return None, [f"Deployment/{PROXY_DEPLOYMENT} missing"]
    account = (pod_spec(proxy) or {}).get("serviceAccountName", "default")
    problems = []
    if not any(namespace_of(sa) == namespace_of(proxy) for sa in of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == account):
        problems.append(f"{ref(proxy)}: ServiceAccount {account} is not defined in {namespace_of(proxy)}")
    return service_account_principal(namespace_of(proxy), account), problems


def check_authorization(docs: list[Doc]) -> list[str]:
    """An ALLOW AuthorizationPolicy on the egress gateway admits the stable name (and every
    host the gateway's servers accept for it) from the proxy's mesh identity only: the
    principal of its ServiceAccount in its namespace."""
    principal, problems = _proxy_principal(docs)
    if principal is None:
        return problems
    policies = [
        p
        for p in of_kind(docs, "AuthorizationPolicy")
        if namespace_of(p) == GATEWAY_NAMESPACE and (p["spec"].get("selector") or {}).get("matchLabels") == EGRESS_GATEWAY_SELECTOR
    ]
    if not policies:
        return problems + [f"no AuthorizationPolicy in {GATEWAY_NAMESPACE} selects istio: egressgateway"]
    served = {
        h.rpartition("/")[2]
        for gw in egress_gateways(docs)
        for s in gw["spec"].get("servers", [])
        for h in s.get("hosts", [])
    }
    admitted: set[str] = set()
    for policy in policies:
        spec = policy["spec"]
        if spec.get("action", "ALLOW") != "ALLOW":
            problems.append(f"{ref(policy)}: action {spec.get('action')}, expected ALLOW")
            continue
        if not spec.get("rules"):
            problems.append(f"{ref(policy)}: no rules (an ALLOW policy without rules admits nothing)")
        for i, rule in enumerate(spec.get("rules") or []):
            sources = [f.get("source") or {} for f in rule.get("from") or []]
            principals = {p for s in sources for p in s.get("principals") or []}
            loose = [s for s in sources if set(s) - {"principals"}]
            if not sources or loose or principals != {principal}:
                problems.append(
                    f"{ref(policy)}: rules[{i}] admits {sorted(principals) or 'any source'}"
                    f"{' and ' + str(loose) if loose else ''}, not only {principal}"
                )
            operations = [t.get("operation") or {} for t in rule.get("to") or []]
            hosts = {h for o in operations for h in o.get("hosts") or []}
            if not operations or not hosts:
                problems.append(f"{ref(policy)}: rules[{i}] admits any host")
            admitted |= hosts
    for host in sorted(served - admitted):
        problems.append(f"the egress gateway serves {host} but no AuthorizationPolicy rule admits it")
    return problems


_PEERS = {
    "DNS": (DNS_NAMESPACE, DNS_SELECTOR, {("UDP", 53), ("TCP", 53)}),
    "istiod": (GATEWAY_NAMESPACE, ISTIOD_SELECTOR, {("TCP", ISTIOD_PORT)}),
    "the egress gateway": (GATEWAY_NAMESPACE, EGRESS_GATEWAY_SELECTOR, {("TCP", p) for p in EGRESS_GATEWAY_TARGET_PORTS.values()}),
}
# What each workload may reach beyond DNS and istiod.
_WORKLOAD_PEERS = {PROXY_DEPLOYMENT: "the egress gateway", CALLER_DEPLOYMENT: "the proxy"}


def _peer_name(docs: list[Doc], peer: Doc, own_namespace: str) -> str | None:
    if "ipBlock" in peer:
        return None
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        namespace = own_namespace
    else:
        names = (ns_selector.get("matchLabels") or {}).get("kubernetes.io/metadata.name")
        if set(ns_selector) != {"matchLabels"} or set(ns_selector["matchLabels"]) != {"kubernetes.io/metadata.name"}:
            return None
        namespace = names
    pods = peer.get("podSelector")
    if pods is None or not (pods.get("matchLabels")) or set(pods) != {"matchLabels"}:
        return None
    for name, (peer_ns, selector, _) in _PEERS.items():
        if namespace == peer_ns and pods["matchLabels"] == selector:
            return name
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    if proxy is not None and namespace == namespace_of(proxy) and selects(pods, pod_labels(proxy)):
        return "the proxy"
    return None


def _allowed_egress(docs: list[Doc], labels: dict, namespace: str) -> tuple[dict[str, set], list[str], bool]:
    """What NetworkPolicies let a pod with these labels reach: peer -> {(protocol, port)}."""
    allowed: dict[str, set] = {}
    problems = []
    restricted = False
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    proxy_port = int(env_value(proxy, PROXY_DEPLOYMENT, "PORT") or 8080) if proxy else 8080
    expected_ports = {name: ports for name, (_, _, ports) in _PEERS.items()} | {"the proxy": {("TCP", proxy_port)}}
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if namespace_of(policy) != namespace or not selects(spec.get("podSelector"), labels):
            continue
        if "Egress" not in spec.get("policyTypes", []):
            continue
        restricted = True
        for i, rule in enumerate(spec.get("egress") or []):
            peers = rule.get("to")
            ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports") or []}
            if not peers:
                problems.append(f"{ref(policy)}: egress[{i}] allows every destination")
                continue
            if not ports:
                problems.append(f"{ref(policy)}: egress[{i}] allows every port")
            for peer in peers:
                name = _peer_name(docs, peer, namespace)
                if name is None:
                    problems.append(f"{ref(policy)}: egress[{i}] allows {peer}, which is none of DNS, istiod, the egress gateway, the proxy")
                    continue
                extra = ports - expected_ports[name]
                if extra:
                    problems.append(f"{ref(policy)}: egress[{i}] allows {name} on {sorted(extra)}")
                allowed.setdefault(name, set()).update(ports)
    return allowed, problems, restricted


def check_egress_network_policies(docs: list[Doc]) -> list[str]:
    """Egress NetworkPolicies: every pod of the namespace (sidecar or not) reaches DNS and
    istiod only; the proxy also the egress gateway, the caller also the proxy; nothing else."""
    problems = []
    # A pod nobody planned for (no sidecar, any labels) gets the namespace's baseline only.
    allowed, found, restricted = _allowed_egress(docs, {}, NAMESPACE)
    problems += found
    if not restricted:
        problems.append(f"no egress NetworkPolicy selects every pod of {NAMESPACE}: a pod without a sidecar could go around the gateway")
    elif set(allowed) != {"DNS", "istiod"}:
        problems.append(f"every pod of {NAMESPACE} may reach {sorted(allowed)}, expected DNS and istiod only")
    for deployment, peer in _WORKLOAD_PEERS.items():
        doc = named(docs, "Deployment", deployment)
        if doc is None:
            problems.append(f"Deployment/{deployment} missing")
            continue
        allowed, found, restricted = _allowed_egress(docs, pod_labels(doc), namespace_of(doc))
        problems += [p for p in found if p not in problems]
        want = {"DNS", "istiod", peer}
        if not restricted:
            problems.append(f"{ref(doc)}: no egress NetworkPolicy selects its pods")
        for name in sorted(want - set(allowed)):
            problems.append(f"{ref(doc)}: egress NetworkPolicies do not let it reach {name}")
        for name in sorted(set(allowed) - want):
            problems.append(f"{ref(doc)}: egress NetworkPolicies let it reach {name}, which it does not need")
    return problems


def check_split(docs: list[Doc]) -> list[str]:
    """The gateway-bound routes: each destination a Cloud Foundry host on 443 with its own
    Host header; no mirror there (the copy would carry the primary destination's Host)."""
    problems = []
    external = set(cf_hosts(docs))
    for vs in gateway_virtual_services(docs):
        for i, route in enumerate(http_routes(vs)):
            if (route.get("rewrite") or {}).get("authority"):
                problems.append(f"{ref(vs)}: route-level rewrite.authority overrides the per-destination Host")
            if mirrors(route):
                problems.append(
                    f"{ref(vs)}: http[{i}] mirrors at the gateway: the copy keeps the Host the primary destination "
                    "sets, so the Cloud Foundry router sends it to the primary's app (or 404s it with -shadow)"
                )
        for entry, dest in destinations(vs):
            host = dest.get("host")
            if host not in external:
                problems.append(f"{ref(vs)}: destination {host} is not a Cloud Foundry host")
            if dest.get("port", {}).get("number") != 443:
                problems.append(f"{ref(vs)}: destination {host} not on port 443")
            set_headers = ((entry.get("headers") or {}).get("request") or {}).get("set") or {}
            add_headers = ((entry.get("headers") or {}).get("request") or {}).get("add") or {}
            if (set_headers.get("host") or add_headers.get("host")) != host:
                problems.append(f"{ref(vs)}: destination {host} does not set Host to {host} (the router would answer 404)")
    return problems


def check_faults(docs: list[Doc]) -> list[str]:
    """Faults that act as written: each with a percentage (istiod leaves Envoy's fraction
    unset otherwise and it never fires), a delay only after the hop whose timeout should
    act (the fault filter runs before the router, so a route's timeout does not cover its
    own delay), and no fault kind on both hops (they would compound)."""
    problems = []
    kinds_by_hop: dict[str, set[str]] = {"mesh": set(), "gateway": set()}
    for vs in of_kind(docs, "VirtualService"):
        hop = "gateway" if gateway_refs(vs) else "mesh"
        for i, route in enumerate(http_routes(vs)):
            for kind, fault in (route.get("fault") or {}).items():
                kinds_by_hop[hop].add(kind)
                value = (fault.get("percentage") or {}).get("value")
                if value is None:
                    problems.append(f"{ref(vs)}: http[{i}] {kind} has no percentage: it never fires")
                elif not 0 < value <= 100:
                    problems.append(f"{ref(vs)}: http[{i}] {kind} percentage {value} out of (0, 100]")
                if kind == "delay" and hop == "mesh":
                    problems.append(
                        f"{ref(vs)}: http[{i}] delay on the sidecar's route: its own timeout does not cover it; "
                        "put the delay on the gateway route"
                    )
    for kind in sorted(kinds_by_hop["mesh"] & kinds_by_hop["gateway"]):
        problems.append(f"{kind} on both the sidecar's and the gateway's route: the two compound")
    return problems


def check_mesh_route(docs: list[Doc]) -> list[str]:
    """Sidecars send the stable name to the egress gateway subset on port 80, with a
    timeout; a mirror goes to the gateway on its other port, which routes the copies."""
    problems = []
    mesh = mesh_virtual_services(docs)
    if len(mesh) != 1:
        return [f"expected one mesh-bound VirtualService for {STABLE_HOST}, found {len(mesh)}"]
    vs = mesh[0]
    for i, route in enumerate(http_routes(vs)):
        for _, dest in destinations({"spec": {"http": [route]}}):
            if dest.get("host") != EGRESS_GATEWAY_HOST or dest.get("port", {}).get("number") != 80 or not dest.get("subset"):
                problems.append(f"{ref(vs)}: http[{i}] does not route to an egress gateway subset on port 80")
        if not route.get("timeout"):
            problems.append(f"{ref(vs)}: http[{i}] has no timeout")
        retries = route.get("retries") or {}
        if retries.get("perTryTimeout") and route.get("timeout"):
            if parse_duration(retries["perTryTimeout"]) > parse_duration(route["timeout"]):
                problems.append(f"{ref(vs)}: http[{i}] perTryTimeout longer than the route timeout")
        for mirror, percentage in mirrors(route):
            port = mirror.get("port", {}).get("number")
            if mirror.get("host") != EGRESS_GATEWAY_HOST or not mirror.get("subset") or port == 80:
                problems.append(
                    f"{ref(vs)}: http[{i}] mirror must go to the egress gateway subset on its other port (443), "
                    "where a gateway route sends the copies to the mirror's app"
                )
                continue
            if percentage is None:
                problems.append(f"{ref(vs)}: http[{i}] mirror without mirrorPercentage copies every request")
            copied = [
                (gvs, r)
                for gvs in gateway_virtual_services(docs)
                for r in http_routes(gvs)
                if any(m.get("port") == port for m in r.get("match") or [])
            ]
            if not copied:
                problems.append(f"{ref(vs)}: http[{i}] mirror to port {port}: no gateway route matches port {port}")
    return problems


def check_proxy_upstream(docs: list[Doc]) -> list[str]:
    """The proxy calls the stable name, on a port its ServiceEntry declares, resolved by
    hostAliases to an address outside Istio's allocation ranges."""
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    if proxy is None:
        return [f"Deployment/{PROXY_DEPLOYMENT} missing"]
    url = env_value(proxy, PROXY_DEPLOYMENT, "UPSTREAM_URL")
    if url is None:
        return [f"{ref(proxy)}: UPSTREAM_URL not set"]
    parts = urlsplit(url)
    problems = []
    if parts.scheme != "http":
        problems.append(f"{ref(proxy)}: UPSTREAM_URL {url} is not plain http (the mesh originates TLS)")
    if parts.hostname != STABLE_HOST:
        problems.append(f"{ref(proxy)}: UPSTREAM_URL host {parts.hostname} is not the stable name {STABLE_HOST}")
    port = parts.port or 80
    declared = {
        p["number"]
        for se in of_kind(docs, "ServiceEntry")
        if parts.hostname in se["spec"].get("hosts", []) and visible_in(se, namespace_of(proxy))
        for p in se["spec"].get("ports", [])
    }
    if port not in declared:
        problems.append(f"{ref(proxy)}: UPSTREAM_URL port {port} is not declared for {parts.hostname} (declared {sorted(declared)})")
    aliases = {
        h: a.get("ip") for a in (pod_spec(proxy) or {}).get("hostAliases") or [] for h in a.get("hostnames", [])
    }
    if parts.hostname not in aliases:
        problems.append(f"{ref(proxy)}: {parts.hostname} has no hostAliases entry: it would not resolve in the pod")
    else:
        address = ipaddress.ip_address(aliases[parts.hostname])
        for allocated in ("240.240.0.0/16", "2001:2::/48"):
            if address in ipaddress.ip_network(allocated):
                problems.append(f"{ref(proxy)}: hostAliases address {address} is in {allocated}, a range Istio allocates")
    return problems


def check_caller_url(docs: list[Doc]) -> list[str]:
    """The caller calls the proxy's Service on its `http` port, and the Service reaches the proxy's port."""
    caller = named(docs, "Deployment", CALLER_DEPLOYMENT)
    service = named(docs, "Service", PROXY_SERVICE)
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    if caller is None or service is None or proxy is None:
        return [f"Deployment/{CALLER_DEPLOYMENT}, Service/{PROXY_SERVICE} and Deployment/{PROXY_DEPLOYMENT} are required"]
    problems = []
    url = env_value(caller, CALLER_DEPLOYMENT, "URL") or ""
    parts = urlsplit(url)
    ns = service["metadata"]["namespace"]
    names = {PROXY_SERVICE, f"{PROXY_SERVICE}.{ns}", f"{PROXY_SERVICE}.{ns}.svc", f"{PROXY_SERVICE}.{ns}.svc.cluster.local"}
    if parts.scheme != "http" or parts.hostname not in names:
        problems.append(f"{ref(caller)}: URL {url!r} is not the Service {PROXY_SERVICE}")
    port = parts.port or 80
    svc_port = next((p for p in service["spec"].get("ports", []) if p.get("port") == port), None)
    if svc_port is None:
        problems.append(f"{ref(service)}: no port {port} for the caller's URL")
    else:
        if svc_port.get("name") != "http":
            problems.append(f"{ref(service)}: port {port} is not named http (Istio would not treat it as HTTP)")
        target = svc_port.get("targetPort", port)
        proxy_ports = [p for c in (pod_spec(proxy) or {}).get("containers", []) for p in c.get("ports", [])]
        if not any(p.get("name") == target or p.get("containerPort") == target for p in proxy_ports):
            problems.append(f"{ref(service)}: targetPort {target} is no port of the proxy's containers")
        proxy_port = env_value(proxy, PROXY_DEPLOYMENT, "PORT") or "8080"
        if not any((p.get("name") == target or p.get("containerPort") == target) and p.get("containerPort") == int(proxy_port) for p in proxy_ports):
            problems.append(f"{ref(service)}: targetPort {target} is not the proxy's PORT {proxy_port}")
    selector = service["spec"].get("selector") or {}
    labels = pod_labels(proxy)
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{ref(service)}: selector {selector} does not select the proxy's pods")
    return problems


def check_timeouts_chain(docs: list[Doc]) -> list[str]:
    """Mesh route timeout < proxy UPSTREAM_TIMEOUT < caller TIMEOUT: the innermost timeout answers first."""
    mesh = mesh_virtual_services(docs)
    proxy = named(docs, "Deployment", PROXY_DEPLOYMENT)
    caller = named(docs, "Deployment", CALLER_DEPLOYMENT)
    if not mesh or proxy is None or caller is None:
        return ["the mesh VirtualService, the proxy and the caller are required"]
    route_timeout = max(parse_duration(r["timeout"]) for r in http_routes(mesh[0]) if r.get("timeout"))
    upstream = parse_duration(env_value(proxy, PROXY_DEPLOYMENT, "UPSTREAM_TIMEOUT") or "5s")
    caller_timeout = parse_duration(env_value(caller, CALLER_DEPLOYMENT, "TIMEOUT") or "5s")
    if not route_timeout < upstream < caller_timeout:
        return [f"timeouts {route_timeout}s (mesh) < {upstream}s (proxy) < {caller_timeout}s (caller) do not hold"]
    return []


def check_grace_period(docs: list[Doc]) -> list[str]:
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for c in spec.get("containers", []):
            drain = next((e.get("value") for e in c.get("env") or [] if e.get("name") == "DRAIN_TIMEOUT"), None)
            if drain is not None and grace <= parse_duration(drain):
                problems.append(f"{ref(doc)}: terminationGracePeriodSeconds {grace} does not exceed DRAIN_TIMEOUT {drain}")
    return problems


REQUIRED_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def check_security(docs: list[Doc]) -> list[str]:
    """Every container: non-root numeric UID, read-only root, no escalation, no capabilities,
    seccomp RuntimeDefault, requests and limits; servers have probes."""
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext") or {}
        for c in containers(spec):
            where = f"{ref(doc)} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            for key, want in REQUIRED_SECURITY.items():
                if sc.get(key) != want:
                    problems.append(f"{where}: securityContext.{key} is not {want}")
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
                problems.append(f"{where}: runAsUser {uid!r} is not a numeric non-root UID")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is {seccomp}, not RuntimeDefault")
            resources = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(kind) or {}):
                        problems.append(f"{where}: no {res} {kind[:-1]}")
            if c.get("ports") and not (c.get("readinessProbe") and c.get("livenessProbe")):
                problems.append(f"{where}: serves ports but lacks a readiness or liveness probe")
    return problems


def check_cf_hosts_in_one_place(files: dict[str, str], docs: list[Doc]) -> list[str]:
    """The Cloud Foundry hostnames appear in istio.yml and the pattern files only (set-cf-hosts.sh edits those)."""
    problems = []
    for host in cf_hosts(docs):
        for name, text in files.items():
            if name != "istio.yml" and not name.startswith("patterns/") and host in text:
                problems.append(f"{name}: mentions {host}; the Cloud Foundry hostnames belong in istio.yml and patterns/ only")
    return problems


SEMANTIC_CHECKS: dict[str, Callable[[list[Doc]], list[str]]] = {
    "common_label": check_common_label,
    "namespace": check_namespace,
    "hosts_declared": check_hosts_declared,
    "egress_gateway_ports": check_egress_gateway_ports,
    "weights": check_weights,
    "gateway_binding": check_gateway_binding,
    "subsets": check_subsets,
    "gateway_hop_mtls": check_gateway_hop_mtls,
    "tls_origination": check_tls_origination,
    "export_scope": check_export_scope,
    "authorization": check_authorization,
    "egress_network_policies": check_egress_network_policies,
    "split": check_split,
    "faults": check_faults,
    "mesh_route": check_mesh_route,
    "proxy_upstream": check_proxy_upstream,
    "caller_url": check_caller_url,
    "timeouts_chain": check_timeouts_chain,
    "grace_period": check_grace_period,
    "security": check_security,
}


def all_problems(docs: list[Doc]) -> list[str]:
    return [p for check in SEMANTIC_CHECKS.values() for p in check(docs)]
