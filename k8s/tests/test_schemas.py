"""Every document in k8s/ against the Kubernetes and Istio schemas; unknown fields and
wrong types are errors, and the negative tests prove the validators reject them."""

from __future__ import annotations

import copy

import pytest

import manifests
import schemas

FILES = manifests.manifest_files() + manifests.pattern_files()
DOCS = [
    (str(path.relative_to(manifests.K8S_DIR)), i, doc) for path in FILES for i, doc in enumerate(manifests.load_file(path))
]
VERSIONS = [schemas.OLDEST_KUBERNETES, schemas.newest_kubernetes()]


def doc_id(entry) -> str:
    name, i, doc = entry
    return f"{name}#{i}-{manifests.ref(doc)}"


def the(kind: str, name: str) -> dict:
    doc = manifests.named(manifests.load_all(), kind, name)
    assert doc is not None, f"{kind}/{name} missing"
    return copy.deepcopy(doc)


def test_k8s_dir_holds_every_part():
    kinds = {doc["kind"] for _, _, doc in DOCS}
    assert {"Namespace", "Deployment", "Service", "ServiceEntry", "Gateway", "DestinationRule", "VirtualService"} <= kinds


@pytest.mark.parametrize("entry", DOCS, ids=doc_id)
@pytest.mark.parametrize("version", VERSIONS)
def test_document_matches_schema(entry, version):
    _, _, doc = entry
    assert schemas.validate(doc, version) == []


@pytest.mark.parametrize("entry", DOCS, ids=doc_id)
def test_document_is_named_and_typed(entry):
    _, _, doc = entry
    assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name")


def test_istio_resources_use_the_v1_api():
    istio = [doc for _, _, doc in DOCS if ".istio.io/" in doc["apiVersion"]]
    assert istio and all(doc["apiVersion"] in manifests.ISTIO_API_VERSIONS for doc in istio)
    assert {doc["apiVersion"] for doc in istio} == manifests.ISTIO_API_VERSIONS


def test_all_istio_resources_are_in_istio_yml_or_a_pattern():
    for name, _, doc in DOCS:
        if ".istio.io/" in doc["apiVersion"]:
            assert name == "istio.yml" or name.startswith("patterns/"), f"{manifests.ref(doc)} is in {name}"


@pytest.mark.parametrize("pattern", manifests.pattern_files(), ids=lambda p: p.name)
def test_pattern_holds_only_resources_istio_yml_names(pattern):
    """`kubectl apply -f k8s/istio.yml` must switch back: it can only replace what it names."""
    base = {manifests.identity(doc) for doc in manifests.load_file(manifests.K8S_DIR / "istio.yml")}
    docs = manifests.load_file(pattern)
    assert docs
    for doc in docs:
        assert manifests.identity(doc) in base, f"{pattern.name}: {manifests.ref(doc)} is not in istio.yml"
    assert len({manifests.identity(doc) for doc in docs}) == len(docs), f"{pattern.name}: an object twice"


def test_authorization_policy_schema_rejects_unknown_field():
    doc = the("AuthorizationPolicy", "hello-external-egress")
    assert schemas.validate(doc, schemas.OLDEST_KUBERNETES) == []
    doc["spec"]["rules"][0]["from"][0]["source"]["principal"] = ["x"]
    assert any("principal: unknown field" in p for p in schemas.validate(doc, schemas.OLDEST_KUBERNETES))


def test_duplicate_keys_are_rejected():
    with pytest.raises(manifests.DuplicateKeyError, match="duplicate key 'replicas'"):
        manifests.load_text("kind: Deployment\nspec:\n  replicas: 1\n  replicas: 2\n")


# -------------------------------------------------------------- negative: Kubernetes


def mutate_deployment_unknown_spec_field(d):
    d["spec"]["replica"] = 2


def mutate_container_unknown_field(d):
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"


def mutate_security_context_unknown_field(d):
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True


def mutate_metadata_unknown_field(d):
    d["metadata"]["label"] = {"a": "b"}


def mutate_replicas_wrong_type(d):
    d["spec"]["replicas"] = "2"


def mutate_container_port_wrong_type(d):
    d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"


def mutate_run_as_user_wrong_type(d):
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "nonroot"


def mutate_env_wrong_type(d):
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 4


@pytest.mark.parametrize(
    "mutate, where",
    [
        (mutate_deployment_unknown_spec_field, "spec"),
        (mutate_container_unknown_field, "containers/0"),
        (mutate_security_context_unknown_field, "securityContext"),
        (mutate_metadata_unknown_field, "metadata"),
        (mutate_replicas_wrong_type, "spec/replicas"),
        (mutate_container_port_wrong_type, "containerPort"),
        (mutate_run_as_user_wrong_type, "runAsUser"),
        (mutate_env_wrong_type, "env/0/value"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_schema_rejects(mutate, where, version):
    doc = the("Deployment", manifests.PROXY_DEPLOYMENT)
    assert schemas.validate(doc, version) == []
    mutate(doc)
    problems = schemas.validate(doc, version)
    assert len(problems) == 1 and where in problems[0], problems


def test_service_unknown_field_rejected():
    doc = the("Service", manifests.PROXY_SERVICE)
    doc["spec"]["ports"][0]["targetport"] = 8080
    assert schemas.validate(doc, schemas.OLDEST_KUBERNETES)


# -------------------------------------------------------------- negative: Istio


def split_vs():
    return the("VirtualService", "hello-external-split")


def mesh_vs():
    return the("VirtualService", "hello-external-via-egress")


def tls_dr():
    return the("DestinationRule", "hello-istio-v1-tls")


def stable_se():
    return the("ServiceEntry", "hello-external")


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    mutate.__name__ = "set_" + "_".join(str(p) for p in path)
    return mutate


ISTIO_NEGATIVES = [
    # Unknown fields, at the top of spec and deep inside.
    (split_vs, _set(["spec", "host"], "hello.external"), "/spec/host: unknown field"),
    (mesh_vs, _set(["spec", "http", 0, "fault", "abort", "percent"], 20), "percent: unknown field"),
    (split_vs, _set(["spec", "http", 0, "route", 0, "headers", "request", "rewrite"], {"host": "x"}), "rewrite: unknown field"),
    (tls_dr, _set(["spec", "trafficPolicy", "portLevelSettings", 0, "tls", "serverName"], "x"), "serverName: unknown field"),
    (stable_se, _set(["spec", "endpoint"], []), "endpoint: unknown field"),
    (stable_se, _set(["metadata", "label"], {"a": "b"}), "label: unknown field"),
    # Wrong types.
    (split_vs, _set(["spec", "http", 0, "route", 0, "weight"], "30"), "weight"),
    (mesh_vs, _set(["spec", "http", 0, "retries", "attempts"], "2"), "attempts"),
    (mesh_vs, _set(["spec", "http", 0, "fault", "abort", "percentage", "value"], "20"), "value"),
    (mesh_vs, _set(["spec", "hosts"], "hello.external"), "hosts"),
    (stable_se, _set(["spec", "ports", 0, "number"], "80"), "number"),
    # Values outside an enum.
    (tls_dr, _set(["spec", "trafficPolicy", "portLevelSettings", 0, "tls", "mode"], "SIMPL"), "mode"),
    (stable_se, _set(["spec", "resolution"], "NONEE"), "resolution"),
    (stable_se, _set(["spec", "location"], "EXTERNAL"), "location"),
    # Versions and kinds that do not exist.
    (stable_se, _set(["apiVersion"], "networking.istio.io/v2"), "apiVersion"),
    (stable_se, _set(["kind"], "ServiceEntri"), "no kind ServiceEntri"),
]


@pytest.mark.parametrize(
    "make, mutate, expected",
    ISTIO_NEGATIVES,
    ids=[f"{m.__name__}-{f.__name__}" for m, f, _ in ISTIO_NEGATIVES],
)
def test_istio_schema_rejects(make, mutate, expected):
    doc = make()
    assert schemas.validate(doc, schemas.OLDEST_KUBERNETES) == []
    mutate(doc)
    problems = schemas.validate(doc, schemas.OLDEST_KUBERNETES)
    assert problems and any(expected in p for p in problems), problems


def test_round_trip_compares_values():
    assert schemas.differences({"a": [1, {"b": 2.0}]}, {"a": [1.0, {"b": 2}]}) == []
    assert schemas.differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == ["/a/c: unknown field"]
    assert schemas.differences({"a": "x"}, {"a": "y"}) == ["/a: 'x' read as 'y'"]
