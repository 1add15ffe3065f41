//! AuthorizationPolicies → Envoy RBAC policies, as istiod's `security/authz` builds them: one
//! policy per rule named `ns[<ns>]-policy[<name>]-rule[<i>]`, principals as `spiffe://` + the
//! value, hosts matched on `:authority` ignoring case (`*` prefix/suffix wildcards), DENY
//! evaluated before ALLOW, and an ALLOW policy without rules allowing nothing.

use crate::policy::PolicyError;
use crate::policy::manifest::{AuthorizationPolicySpec, Resource, ResourceId, Spec};
use crate::policy::model::{Authorization, AuthzOperation, AuthzPolicy, AuthzSource};

use super::Translator;
use super::workloads::{self, CALLER, EGRESS_GATEWAY, PROXY, ROOT_NAMESPACE};

/// The AuthorizationPolicies applying to the egress gateway; those that would apply to a
/// sidecar's inbound side (which local-mesh does not run) are refused.
pub fn authorization(
    translator: &Translator<'_>,
    resources: &[Resource],
) -> Result<Authorization, PolicyError> {
    let mut authorization = Authorization::default();
    for resource in resources {
        let Spec::AuthorizationPolicy(policy) = &resource.spec else {
            continue;
        };
        let id = &resource.id;
        crate::policy::reject_other(translator, id, "spec", &policy.other)?;
        let selector = policy.selector.as_ref().map(|s| &s.match_labels);
        let applies_to = |workload: &workloads::Workload| {
            (id.namespace == workload.namespace || id.namespace == ROOT_NAMESPACE)
                && selector
                    .is_none_or(|labels| labels.is_empty() || workloads::selects(labels, workload))
        };
        for sidecar in [PROXY, CALLER] {
            if applies_to(&sidecar) {
                return Err(translator.error(
                    id,
                    format!("applies to {}'s sidecar, whose inbound side local-mesh does not run; select the egress gateway (istio: egressgateway)", sidecar.name),
                ));
            }
        }
        if !applies_to(&EGRESS_GATEWAY) {
            continue; // selects no workload of the demo: no effect, as on a cluster
        }
        let rules = rbac_policies(translator, id, policy)?;
        match policy.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => authorization
                .allow
                .get_or_insert_with(Vec::new)
                .extend(rules),
            "DENY" => authorization.deny.extend(rules),
            other => {
                return Err(translator.error(
                    id,
                    format!("action {other} is not supported (ALLOW, DENY are)"),
                ));
            }
        }
    }
    Ok(authorization)
}

fn rbac_policies(
    translator: &Translator<'_>,
    id: &ResourceId,
    policy: &AuthorizationPolicySpec,
) -> Result<Vec<AuthzPolicy>, PolicyError> {
    let mut out = Vec::new();
    // `rules` absent or empty: the policy matches nothing (ALLOW: nothing allowed).
    for (index, rule) in policy.rules.iter().flatten().enumerate() {
        let field = format!("rules[{index}]");
        if !rule.when.is_empty() {
            return Err(
                translator.error(id, format!("{field}.when is not supported by local-mesh"))
            );
        }
        let mut from = Vec::new();
        for (i, entry) in rule.from.iter().enumerate() {
            let source = &entry.source;
            crate::policy::reject_other(
                translator,
                id,
                &format!("{field}.from[{i}].source"),
                &source.other,
            )?;
            let spiffe =
                |values: &[String]| values.iter().map(|p| format!("spiffe://{p}")).collect();
            from.push(AuthzSource {
                principals: spiffe(&source.principals),
                not_principals: spiffe(&source.not_principals),
                namespaces: source.namespaces.clone(),
                not_namespaces: source.not_namespaces.clone(),
            });
        }
        let mut to = Vec::new();
        for (i, entry) in rule.to.iter().enumerate() {
            let operation = &entry.operation;
            crate::policy::reject_other(
                translator,
                id,
                &format!("{field}.to[{i}].operation"),
                &operation.other,
            )?;
            to.push(AuthzOperation {
                hosts: operation.hosts.clone(),
                not_hosts: operation.not_hosts.clone(),
                methods: operation.methods.clone(),
                not_methods: operation.not_methods.clone(),
                paths: operation.paths.clone(),
                not_paths: operation.not_paths.clone(),
            });
        }
        out.push(AuthzPolicy {
            name: format!("ns[{}]-policy[{}]-rule[{index}]", id.namespace, id.name),
            from,
            to,
        });
    }
    Ok(out)
}
