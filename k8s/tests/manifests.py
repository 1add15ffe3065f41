"""Loading k8s/ and checking what a working egress split needs.

Each check takes the list of documents and returns a list of problems (empty =
fine), so tests can run it on the real files and on mutated copies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import yaml

K8S_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = K8S_DIR.parent

COMMON_LABEL = ("demo", "istio-external-services")
NAMESPACE = "egress-demo"
STABLE_HOST = "hello.external"
PROXY_DEPLOYMENT = "app-that-calls-externally"
PROXY_SERVICE = "service-that-calls-externally"
CALLER_DEPLOYMENT = "traffic"
# Installed with Istio (demo profile, or `components.egressGateways`), not by k8s/.
EGRESS_GATEWAY_HOST = "istio-egressgateway.istio-system.svc.cluster.local"
# The ports the egress gateway's Service exposes.
EGRESS_GATEWAY_PORTS = {80, 443}
ISTIO_NETWORKING = "networking.istio.io/v1"

Doc = dict[str, Any]


class DuplicateKeyError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, as kubectl does."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def manifest_files() -> list[Path]:
    """The files `kubectl apply -f k8s/` reads (not recursive)."""
    return sorted(p for p in K8S_DIR.iterdir() if p.suffix in {".yml", ".yaml", ".json"} and p.is_file())


def load_text(text: str) -> list[Doc]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]


def load_file(path: Path) -> list[Doc]:
    return load_text(path.read_text(encoding="utf-8"))


def load_all() -> list[Doc]:
    return [doc for path in manifest_files() for doc in load_file(path)]


# ---------------------------------------------------------------- lookups


def ref(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def of_kind(docs: Iterable[Doc], kind: str) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") == kind)


def named(docs: Iterable[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in of_kind(docs, kind) if d["metadata"].get("name") == name), None)


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return doc.get("spec", {}).get("template", {}).get("spec")
    if doc.get("kind") == "Pod":
        return doc.get("spec")
    return None


def pod_labels(doc: Doc) -> dict:
    if doc.get("kind") == "Pod":
        return doc.get("metadata", {}).get("labels") or {}
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def env_value(doc: Doc, container: str, name: str) -> str | None:
    spec = pod_spec(doc) or {}
    for c in containers(spec):
        if c.get("name") == container:
            for e in c.get("env") or []:
                if e.get("name") == name:
                    return e.get("value")
    return None


def service_entry_hosts(docs: Iterable[Doc]) -> set[str]:
    return {h for se in of_kind(docs, "ServiceEntry") for h in se["spec"].get("hosts", [])}


def service_hosts(docs: Iterable[Doc]) -> set[str]:
    """Names a Kubernetes Service of k8s/ is reachable by from its namespace."""
    names = set()
    for svc in of_kind(docs, "Service"):
        name, ns = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
        names |= {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
    return names


def http_routes(vs: Doc) -> list[Doc]:
    return vs.get("spec", {}).get("http") or []


def destinations(vs: Doc) -> Iterator[tuple[Doc, Doc]]:
    """(route entry, destination) for every HTTP destination of a VirtualService."""
    for route in http_routes(vs):
        for entry in route.get("route") or []:
            yield entry, entry.get("destination", {})


def is_mesh_bound(vs: Doc) -> bool:
    # A VirtualService without `gateways` applies to sidecars (the gateway `mesh`).
    return "mesh" in vs["spec"].get("gateways", ["mesh"])


def gateway_refs(vs: Doc) -> list[str]:
    return [g for g in vs["spec"].get("gateways", []) if g != "mesh"]


def resolve_gateway(docs: list[Doc], vs: Doc, gateway_ref: str) -> Doc | None:
    ns, _, name = gateway_ref.rpartition("/")
    ns = ns or vs["metadata"].get("namespace")
    return next(
        (g for g in of_kind(docs, "Gateway") if g["metadata"]["name"] == name and g["metadata"].get("namespace") == ns),
        None,
    )


def parse_duration(text: str) -> float:
    """Seconds from a Kubernetes/Istio or clap-style duration: `3s`, `250ms`, `1m`, `1.5s`, `4`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(text).strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.rpartition("/")[2]  # Gateway hosts may be `namespace/host`.
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def cf_hosts(docs: list[Doc]) -> list[str]:
    """The Cloud Foundry hostnames: MESH_EXTERNAL ServiceEntry hosts other than the stable name."""
    return [
        h
        for se in of_kind(docs, "ServiceEntry")
        if se["spec"].get("location") == "MESH_EXTERNAL"
        for h in se["spec"].get("hosts", [])
        if h != STABLE_HOST
    ]


# ---------------------------------------------------------------- checks


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


def check_namespace(docs: list[Doc]) -> list[str]:
    problems = []
    ns = named(docs, "Namespace", NAMESPACE)
    if ns is None:
        problems.append(f"Namespace/{NAMESPACE} missing")
    elif (ns["metadata"].get("labels") or {}).get("istio-injection") != "enabled":
        problems.append(f"Namespace/{NAMESPACE}: label istio-injection=enabled missing (no sidecars)")
    for doc in docs:
        if doc.get("kind") != "Namespace" and doc.get("metadata", {}).get("namespace") != NAMESPACE:
            problems.append(f"{ref(doc)}: namespace is not {NAMESPACE}")
    return problems


def check_hosts_declared(docs: list[Doc]) -> list[str]:
    """REGISTRY_ONLY: every host routed to or called is known to the mesh."""
    known = service_entry_hosts(docs) | service_hosts(docs) | {EGRESS_GATEWAY_HOST}
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for host in vs["spec"].get("hosts", []):
            if host not in known:
                problems.append(f"{ref(vs)}: host {host} is declared by no ServiceEntry or Service")
        for _, dest in destinations(vs):
            if dest.get("host") not in known:
                problems.append(f"{ref(vs)}: destination host {dest.get('host')} is declared by no ServiceEntry or Service")
    for dr in of_kind(docs, "DestinationRule"):
        if dr["spec"].get("host") not in known:
            problems.append(f"{ref(dr)}: host {dr['spec'].get('host')} is declared by no ServiceEntry or Service")
    return problems


def check_egress_gateway_ports(docs: list[Doc]) -> list[str]:
    problems = []
    for gw in of_kind(docs, "Gateway"):
        for server in gw["spec"].get("servers", []):
            number = server.get("port", {}).get("number")
            if number not in EGRESS_GATEWAY_PORTS:
                problems.append(f"{ref(gw)}: server port {number}: the egress gateway listens on 80 and 443 only")
    for vs in of_kind(docs, "VirtualService"):
        for _, dest in destinations(vs):
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
    """Gateway-bound VirtualServices name existing Gateways whose servers accept their hosts."""
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for gateway_ref in gateway_refs(vs):
            gw = resolve_gateway(docs, vs, gateway_ref)
            if gw is None:
                problems.append(f"{ref(vs)}: gateway {gateway_ref} not found")
                continue
            if gw["spec"].get("selector") != {"istio": "egressgateway"}:
                problems.append(f"{ref(gw)}: selector is not istio: egressgateway")
            server_hosts = [h for s in gw["spec"].get("servers", []) for h in s.get("hosts", [])]
            for host in vs["spec"].get("hosts", []):
                if not any(host_matches(p, host) for p in server_hosts):
                    problems.append(f"{ref(vs)}: host {host} is not served by {ref(gw)} (hosts {server_hosts})")
    for gw in of_kind(docs, "Gateway"):
        gw_hosts = {h.rpartition("/")[2] for s in gw["spec"].get("servers", []) for h in s.get("hosts", [])}
        bound = {
            h
            for vs in of_kind(docs, "VirtualService")
            for g in gateway_refs(vs)
            if resolve_gateway(docs, vs, g) is gw
            for h in vs["spec"].get("hosts", [])
        }
        for host in sorted(gw_hosts - bound):
            problems.append(f"{ref(gw)}: host {host} has no VirtualService bound to this gateway")
    return problems


def check_subsets(docs: list[Doc]) -> list[str]:
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for _, dest in destinations(vs):
            subset = dest.get("subset")
            if subset is None:
                continue
            found = any(
                s.get("name") == subset
                for dr in of_kind(docs, "DestinationRule")
                if dr["spec"].get("host") == dest.get("host")
                for s in dr["spec"].get("subsets", [])
            )
            if not found:
                problems.append(f"{ref(vs)}: subset {subset} of {dest.get('host')} is defined by no DestinationRule")
    return problems


def _tls_for_port(dr: Doc, port: int) -> Doc | None:
    policy = dr["spec"].get("trafficPolicy") or {}
    for setting in policy.get("portLevelSettings", []):
        if setting.get("port", {}).get("number") == port and "tls" in setting:
            return setting["tls"]
    return policy.get("tls")


def check_tls_origination(docs: list[Doc]) -> list[str]:
    """Each Cloud Foundry host: HTTPS on 443 with a DestinationRule originating TLS with sni = host."""
    problems = []
    for se in of_kind(docs, "ServiceEntry"):
        for host in se["spec"].get("hosts", []):
            if host == STABLE_HOST:
                continue
            ports = [p for p in se["spec"].get("ports", []) if p.get("protocol") == "HTTPS"]
            if not ports:
                problems.append(f"{ref(se)}: {host} declares no HTTPS port")
            for port in ports:
                tls = next(
                    (
                        t
                        for dr in of_kind(docs, "DestinationRule")
                        if dr["spec"].get("host") == host
                        for t in [_tls_for_port(dr, port["number"])]
                        if t is not None
                    ),
                    None,
                )
                if tls is None:
                    problems.append(f"{host}:{port['number']}: no DestinationRule originates TLS")
                    continue
                if tls.get("mode") != "SIMPLE":
                    problems.append(f"{host}:{port['number']}: tls mode {tls.get('mode')}, expected SIMPLE")
                if tls.get("sni") != host:
                    problems.append(f"{host}:{port['number']}: tls sni {tls.get('sni')!r}, expected {host!r}")
    return problems


def check_split(docs: list[Doc]) -> list[str]:
    """The gateway-bound split: each destination a CF host on 443 with its own Host header."""
    problems = []
    external = set(cf_hosts(docs))
    for vs in of_kind(docs, "VirtualService"):
        if not gateway_refs(vs):
            continue
        for route in http_routes(vs):
            if (route.get("rewrite") or {}).get("authority"):
                problems.append(f"{ref(vs)}: route-level rewrite.authority overrides the per-destination Host")
            if route.get("fault"):
                problems.append(f"{ref(vs)}: fault on the gateway route compounds with the sidecar's")
        for entry, dest in destinations(vs):
            host = dest.get("host")
            if host not in external:
                problems.append(f"{ref(vs)}: destination {host} is not a Cloud Foundry host")
            if dest.get("port", {}).get("number") != 443:
                problems.append(f"{ref(vs)}: destination {host} not on port 443")
            set_headers = ((entry.get("headers") or {}).get("request") or {}).get("set") or {}
            if set_headers.get("host") != host:
                problems.append(f"{ref(vs)}: destination {host} does not set Host to {host} (the router would answer 404)")
    return problems


def check_mesh_route(docs: list[Doc]) -> list[str]:
    """Sidecars send the stable name to the egress gateway subset on port 80, with fault, timeout, retries."""
    problems = []
    mesh = [vs for vs in of_kind(docs, "VirtualService") if is_mesh_bound(vs) and STABLE_HOST in vs["spec"].get("hosts", [])]
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
    return problems


def check_not_hidden(docs: list[Doc]) -> list[str]:
    """What the egress gateway (namespace istio-system) must see is exported to it."""
    problems = []
    for doc in docs:
        if doc.get("apiVersion", "").startswith("networking.istio.io/"):
            export_to = doc.get("spec", {}).get("exportTo")
            if export_to is not None and "*" not in export_to and "istio-system" not in export_to:
                problems.append(f"{ref(doc)}: exportTo {export_to} hides it from the egress gateway")
    return problems


def check_proxy_upstream(docs: list[Doc]) -> list[str]:
    """The proxy calls the stable name, on a port its ServiceEntry declares, resolved by hostAliases."""
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
        if parts.hostname in se["spec"].get("hosts", [])
        for p in se["spec"].get("ports", [])
    }
    if port not in declared:
        problems.append(f"{ref(proxy)}: UPSTREAM_URL port {port} is not declared for {parts.hostname} (declared {sorted(declared)})")
    aliases = {h for a in (pod_spec(proxy) or {}).get("hostAliases") or [] for h in a.get("hostnames", [])}
    if parts.hostname not in aliases:
        problems.append(f"{ref(proxy)}: {parts.hostname} has no hostAliases entry: it would not resolve in the pod")
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
    mesh = [vs for vs in of_kind(docs, "VirtualService") if is_mesh_bound(vs) and STABLE_HOST in vs["spec"].get("hosts", [])]
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
    """The Cloud Foundry hostnames appear in istio.yml only (set-cf-hosts.sh edits that file)."""
    problems = []
    for host in cf_hosts(docs):
        for name, text in files.items():
            if name != "istio.yml" and host in text:
                problems.append(f"{name}: mentions {host}; the Cloud Foundry hostnames belong in istio.yml only")
    return problems


SEMANTIC_CHECKS: dict[str, Callable[[list[Doc]], list[str]]] = {
    "common_label": check_common_label,
    "namespace": check_namespace,
    "hosts_declared": check_hosts_declared,
    "egress_gateway_ports": check_egress_gateway_ports,
    "weights": check_weights,
    "gateway_binding": check_gateway_binding,
    "subsets": check_subsets,
    "tls_origination": check_tls_origination,
    "split": check_split,
    "mesh_route": check_mesh_route,
    "not_hidden": check_not_hidden,
    "proxy_upstream": check_proxy_upstream,
    "caller_url": check_caller_url,
    "timeouts_chain": check_timeouts_chain,
    "grace_period": check_grace_period,
    "security": check_security,
}


def all_problems(docs: list[Doc]) -> list[str]:
    return [p for check in SEMANTIC_CHECKS.values() for p in check(docs)]
