"""Loading k8s/ and k8s/patterns/, merging a pattern over the base as the API server
would, and the lookups the checks (checks.py) share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import yaml

K8S_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = K8S_DIR.parent

PATTERNS_DIR = K8S_DIR / "patterns"

COMMON_LABEL = ("demo", "istio-external-services")
NAMESPACE = "egress-demo"
STABLE_HOST = "hello.external"
PROXY_DEPLOYMENT = "app-that-calls-externally"
PROXY_SERVICE = "service-that-calls-externally"
CALLER_DEPLOYMENT = "traffic"
# Installed with Istio (demo profile, or `components.egressGateways`), not by k8s/.
GATEWAY_NAMESPACE = "istio-system"
EGRESS_GATEWAY_HOST = f"istio-egressgateway.{GATEWAY_NAMESPACE}.svc.cluster.local"
EGRESS_GATEWAY_SELECTOR = {"istio": "egressgateway"}
# The ports the egress gateway's Service exposes, and the container ports behind them
# (Istio's istio-egress chart: 80 -> 8080 named http2, 443 -> 8443 named https).
EGRESS_GATEWAY_TARGET_PORTS = {80: 8080, 443: 8443}
EGRESS_GATEWAY_PORTS = set(EGRESS_GATEWAY_TARGET_PORTS)
ISTIOD_SELECTOR = {"app": "istiod"}
ISTIOD_PORT = 15012
DNS_NAMESPACE = "kube-system"
DNS_SELECTOR = {"k8s-app": "kube-dns"}
TRUST_DOMAIN = "cluster.local"
ISTIO_API_VERSIONS = {"networking.istio.io/v1", "security.istio.io/v1"}

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


def pattern_files() -> list[Path]:
    return sorted(PATTERNS_DIR.glob("*.yml"))


def identity(doc: Doc) -> tuple[str, str, str | None, str | None]:
    """What the API server names an object by: API group, kind, namespace, name."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    metadata = doc.get("metadata") or {}
    return group, doc.get("kind", ""), metadata.get("namespace"), metadata.get("name")


def merged(base: list[Doc], overlay: list[Doc]) -> list[Doc]:
    """`kubectl apply -f overlay` after `kubectl apply -f base`: an object of the overlay
    replaces the object with the same identity (a complete resource in the overlay leaves
    none of the base's fields behind), new objects are added, the rest stays."""
    replacements = {identity(doc): doc for doc in overlay}
    out = [replacements.pop(identity(doc), doc) for doc in base]
    return out + [doc for doc in overlay if identity(doc) in replacements]


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


def namespace_of(doc: Doc) -> str | None:
    return (doc.get("metadata") or {}).get("namespace")


def visible_in(doc: Doc, namespace: str) -> bool:
    """Whether an Istio resource is visible to proxies of a namespace (exportTo; unset = all)."""
    export_to = (doc.get("spec") or {}).get("exportTo")
    if export_to is None or "*" in export_to:
        return True
    return any(ns == namespace or (ns == "." and namespace_of(doc) == namespace) for ns in export_to)


def mesh_virtual_services(docs: list[Doc], host: str = STABLE_HOST) -> list[Doc]:
    return [vs for vs in of_kind(docs, "VirtualService") if is_mesh_bound(vs) and host in vs["spec"].get("hosts", [])]


def gateway_virtual_services(docs: list[Doc]) -> list[Doc]:
    return [vs for vs in of_kind(docs, "VirtualService") if gateway_refs(vs)]


def destination_rule_for(docs: list[Doc], host: str, proxy_namespace: str, root_namespace: str = GATEWAY_NAMESPACE) -> Doc | None:
    """The DestinationRule istiod gives a proxy of `proxy_namespace` for `host`: one visible
    in the proxy's own namespace first, then one the service's namespace exports, then one
    the root namespace exports (istio-system is the usual root namespace)."""
    rules = [dr for dr in of_kind(docs, "DestinationRule") if dr["spec"].get("host") == host]
    own = [dr for dr in rules if namespace_of(dr) == proxy_namespace and visible_in(dr, proxy_namespace)]
    if own:
        return own[0]
    service_namespace = host.split(".")[1] if host.endswith(".svc.cluster.local") else None
    for namespace in [service_namespace, root_namespace]:
        exported = [
            dr
            for dr in rules
            if namespace_of(dr) == namespace and namespace != proxy_namespace and visible_in(dr, proxy_namespace)
        ]
        if exported:
            return exported[0]
    return None


def tls_for_port(policy: Doc | None, port: int) -> Doc | None:
    """The TLS settings a traffic policy gives a port: its port-level setting, else its own."""
    policy = policy or {}
    for setting in policy.get("portLevelSettings", []):
        if setting.get("port", {}).get("number") == port and "tls" in setting:
            return setting["tls"]
    return policy.get("tls")


def subset_tls(dr: Doc, subset: str | None, port: int) -> Doc | None:
    """A subset's own policy for the port wins over the DestinationRule's."""
    if subset is not None:
        for s in dr["spec"].get("subsets", []):
            if s.get("name") == subset:
                tls = tls_for_port(s.get("trafficPolicy"), port)
                if tls is not None:
                    return tls
    return tls_for_port(dr["spec"].get("trafficPolicy"), port)


def gateway_servers(gateway: Doc, port: int) -> list[Doc]:
    return [s for s in gateway["spec"].get("servers", []) if s.get("port", {}).get("number") == port]


def egress_gateways(docs: list[Doc]) -> list[Doc]:
    return [gw for gw in of_kind(docs, "Gateway") if gw["spec"].get("selector") == EGRESS_GATEWAY_SELECTOR]


def mirrors(route: Doc) -> list[tuple[Doc, float | None]]:
    """(destination, percentage) of every mirror of an HTTP route (`mirror` and `mirrors`)."""
    out = []
    if route.get("mirror"):
        out.append((route["mirror"], (route.get("mirrorPercentage") or {}).get("value")))
    for m in route.get("mirrors") or []:
        out.append((m.get("destination") or {}, (m.get("percentage") or {}).get("value")))
    return out


def service_account_principal(namespace: str, service_account: str) -> str:
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def selects(selector: Doc | None, labels: dict) -> bool:
    """A NetworkPolicy podSelector / namespaceSelector (matchLabels only; {} selects all)."""
    selector = selector or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
