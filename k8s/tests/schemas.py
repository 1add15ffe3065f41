"""Schema validation of k8s/ documents, with unknown fields and wrong types as errors.

- Kubernetes kinds: kubernetes-validate's strict JSON schemas (generated from the
  Kubernetes OpenAPI, with `additionalProperties: false` on every object).
- Istio kinds: cloudcoil's typed models, generated from Istio's CRD schemas,
  parsed in pydantic's strict mode (no type coercion). The models ignore unknown
  fields, so each document is dumped back and compared with the input: anything
  the model dropped is a field the CRD does not know.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import kubernetes_validate
import pydantic

# The oldest Kubernetes minor the manifests must work on: Istio 1.22, the oldest
# release the configuration targets, supports Kubernetes 1.27 and later. The
# tests also run against the newest schemas kubernetes-validate ships.
OLDEST_KUBERNETES = "1.27"
ISTIO_MODULES = {
    "networking.istio.io/v1": "cloudcoil.models.istio.networking.v1",
    "security.istio.io/v1": "cloudcoil.models.istio.security.v1",
}


def newest_kubernetes() -> str:
    return kubernetes_validate.utils.latest_version()


def validate(doc: dict[str, Any], kubernetes_version: str) -> list[str]:
    api_version = doc.get("apiVersion", "")
    if api_version.endswith(".istio.io") or ".istio.io/" in api_version:
        return validate_istio(doc)
    return validate_kubernetes(doc, kubernetes_version)


def validate_kubernetes(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path) or "(document)"
        return [f"{_ref(doc)}: {path}: {e.message} (Kubernetes {e.version} schema)"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{_ref(doc)}: {e.message}"]
    return []


def validate_istio(doc: dict[str, Any]) -> list[str]:
    module_name = ISTIO_MODULES.get(doc.get("apiVersion"))
    if module_name is None:
        return [f"{_ref(doc)}: apiVersion {doc.get('apiVersion')} is not one of {sorted(ISTIO_MODULES)}"]
    model = getattr(importlib.import_module(module_name), str(doc.get("kind")), None)
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        return [f"{_ref(doc)}: no kind {doc.get('kind')} in {doc.get('apiVersion')}"]
    try:
        parsed = model.model_validate(doc, strict=True)
    except pydantic.ValidationError as e:
        return [
            f"{_ref(doc)}: {'/'.join(str(p) for p in err['loc'])}: {err['msg']} (Istio schema)"
            for err in e.errors()
        ]
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{_ref(doc)}: {problem} (Istio schema)" for problem in differences(doc, dumped)]


def differences(original: Any, dumped: Any, path: str = "") -> list[str]:
    """What the model lost or changed: unknown fields show up as missing keys."""
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [f"{path or '/'}: read as {type(dumped).__name__}"]
        problems = []
        for key, value in original.items():
            if key not in dumped:
                problems.append(f"{path}/{key}: unknown field")
            else:
                problems += differences(value, dumped[key], f"{path}/{key}")
        return problems
    if isinstance(original, list):
        if not isinstance(dumped, list) or len(dumped) != len(original):
            return [f"{path}: list read differently"]
        return [p for i, (a, b) in enumerate(zip(original, dumped)) for p in differences(a, b, f"{path}/{i}")]
    if isinstance(original, (int, float)) and not isinstance(original, bool) and isinstance(dumped, (int, float)):
        return [] if math.isclose(original, dumped) else [f"{path}: {original!r} read as {dumped!r}"]
    return [] if original == dumped else [f"{path}: {original!r} read as {dumped!r}"]


def _ref(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
