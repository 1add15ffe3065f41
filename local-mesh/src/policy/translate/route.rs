//! VirtualService http routes → Envoy routes, as istiod's `route/route.go` translates them: one
//! Envoy route per `match` entry (first match wins, in order), the fault as the fault filter's
//! per-route config (a fault without `percentage` never fires), `0s` timeout when none is set,
//! the retry policy (istiod's default when none is set), mirrors without the `-shadow` Host
//! suffix, and `host` in `headers.request.set`/`add` as a Host rewrite.

use std::time::Duration;

use crate::policy::PolicyError;
use crate::policy::manifest::{
    self, HttpMatch, HttpRoute, ResourceId, RouteDestination, VirtualServiceSpec,
};
use crate::policy::model::{
    Abort, Delay, Destination, Fault, HeaderMatch, HeaderOperations, Mirror, PathMatch, Retries,
    Route, RouteMatch, StringMatch,
};

use super::Translator;
use super::cluster::outbound_name;
use super::service::Service;

/// Retry conditions istiod's validation accepts in `retryOn` (besides status codes).
const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// A VirtualService bound to the sidecars: no `gateways`, or `mesh` among them.
pub fn binds_mesh(vs: &VirtualServiceSpec) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// A VirtualService bound to `gateway` (`name` in its own namespace, or `namespace/name`).
pub fn binds_gateway(vs: &VirtualServiceSpec, vs_id: &ResourceId, gateway: &ResourceId) -> bool {
    vs.gateways
        .iter()
        .any(|reference| refers_to(reference, &vs_id.namespace, gateway))
}

fn refers_to(reference: &str, own_namespace: &str, gateway: &ResourceId) -> bool {
    let (namespace, name) = reference
        .split_once('/')
        .unwrap_or((own_namespace, reference));
    namespace == gateway.namespace && name == gateway.name
}

/// Fields of a VirtualService as a whole.
pub fn check_virtual_service(
    translator: &Translator<'_>,
    id: &ResourceId,
    vs: &VirtualServiceSpec,
) -> Result<(), PolicyError> {
    crate::policy::reject_other(translator, id, "spec", &vs.other)?;
    if vs.http.is_empty() {
        return Err(translator.error(
            id,
            "has no http routes (tcp and tls routes are not supported)",
        ));
    }
    Ok(())
}

/// istiod's route for a service no VirtualService routes: everything to its own cluster, no
/// timeout, the default retries.
pub fn default_route(service: &Service, port: u16) -> Route {
    Route {
        name: "default".to_owned(),
        source: service.source.clone(),
        matcher: RouteMatch::default(),
        weighted: false,
        destinations: vec![Destination {
            cluster: outbound_name(port, None, &service.host),
            host: service.host.clone(),
            port,
            subset: None,
            weight: 100,
            headers: HeaderOperations::default(),
        }],
        host_rewrite: None,
        headers: HeaderOperations::default(),
        fault: None,
        timeout: None,
        retries: Retries::istio_default(),
        mirrors: Vec::new(),
    }
}

/// The Envoy routes of a VirtualService for a listener on `port` of a proxy bound by `bindings`
/// (`mesh`, or `<namespace>/<gateway>`).
pub fn routes(
    translator: &Translator<'_>,
    id: &ResourceId,
    vs: &VirtualServiceSpec,
    port: u16,
    bindings: &[String],
    proxy_namespace: &str,
) -> Result<Vec<Route>, PolicyError> {
    let mut routes = Vec::new();
    for (index, http) in vs.http.iter().enumerate() {
        let field = format!("http[{index}]");
        let template = route(translator, id, &field, http, proxy_namespace)?;
        let matches: Vec<Option<&HttpMatch>> = if http.matches.is_empty() {
            vec![None]
        } else {
            http.matches.iter().map(Some).collect()
        };
        for (match_index, condition) in matches.into_iter().enumerate() {
            let mut route = template.clone();
            if let Some(condition) = condition {
                let field = format!("{field}.match[{match_index}]");
                // istiod drops a match for another port or another proxy.
                if condition.port.is_some_and(|p| p != port) {
                    continue;
                }
                if !condition.gateways.is_empty()
                    && !condition.gateways.iter().any(|g| {
                        bindings.iter().any(|b| {
                            b == g
                                || b.split_once('/')
                                    .is_some_and(|(ns, name)| ns == id.namespace && name == g)
                        })
                    })
                {
                    continue;
                }
                route.matcher = route_match(translator, id, &field, condition)?;
                if let Some(name) = &condition.name {
                    route.name = format!("{}.{name}", route.name);
                }
            }
            routes.push(route);
        }
    }
    Ok(routes)
}

fn route(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    http: &HttpRoute,
    proxy_namespace: &str,
) -> Result<Route, PolicyError> {
    if http.other.contains_key("mirror_percent") || http.other.contains_key("mirrorPercent") {
        return Err(translator.error(
            id,
            format!("{field}.mirrorPercent is deprecated; use mirrorPercentage.value"),
        ));
    }
    crate::policy::reject_other(translator, id, field, &http.other)?;
    if http.route.is_empty() {
        return Err(translator.error(id, format!("{field} has no route destination")));
    }
    let headers = match &http.headers {
        None => HeaderOperations::default(),
        Some(headers) => header_operations(headers),
    };
    let several = http.route.len() > 1;
    let mut destinations = Vec::new();
    for (index, destination) in http.route.iter().enumerate() {
        let field = format!("{field}.route[{index}]");
        destinations.push(route_destination(
            translator,
            id,
            &field,
            destination,
            several,
        )?);
    }
    for (index, destination) in destinations.iter().enumerate() {
        if destinations[..index]
            .iter()
            .any(|d| d.cluster == destination.cluster)
        {
            return Err(translator.error(
                id,
                format!(
                    "{field}: {} appears twice among the destinations",
                    destination.cluster
                ),
            ));
        }
    }
    if destinations.iter().map(|d| d.weight).sum::<u32>() == 0 {
        return Err(translator.error(id, format!("{field}: the destination weights add up to 0")));
    }
    if several {
        // istiod leaves 0-weight destinations out of the weighted clusters.
        destinations.retain(|d| d.weight > 0);
    }
    let timeout = match &http.timeout {
        None => None,
        Some(value) => {
            let timeout = translator.duration(id, &format!("{field}.timeout"), value)?;
            // `0s` disables the timeout, as an absent one does.
            (!timeout.is_zero()).then_some(timeout)
        }
    };
    let retries = match &http.retries {
        None => Retries::istio_default(),
        Some(policy) => retries(translator, id, field, policy)?,
    };
    let fault = http
        .fault
        .as_ref()
        .map(|fault| self::fault(translator, id, field, fault))
        .transpose()?
        .flatten();
    let mut mirrors = Vec::new();
    if let Some(mirror) = &http.mirror {
        let percent = match &http.mirror_percentage {
            None => Some(100.0),
            Some(p) => {
                let value = percent(
                    translator,
                    id,
                    &format!("{field}.mirrorPercentage.value"),
                    p.value,
                )?;
                // An explicit 0 means no mirror (istiod's `MirrorPercent`).
                (value > 0.0).then_some(value)
            }
        };
        if let Some(percent) = percent {
            let port = match &mirror.port {
                Some(port) => port.number,
                None => single_port(
                    translator,
                    id,
                    &format!("{field}.mirror"),
                    &mirror.host,
                    proxy_namespace,
                )?,
            };
            mirrors.push(Mirror {
                cluster: outbound_name(port, mirror.subset.as_deref(), &mirror.host),
                host: mirror.host.clone(),
                percent,
            });
        }
    } else if http.mirror_percentage.is_some() {
        return Err(translator.error(id, format!("{field}.mirrorPercentage needs a mirror")));
    }
    Ok(Route {
        name: http.name.clone().unwrap_or_default(),
        source: id.to_string(),
        matcher: RouteMatch::default(),
        host_rewrite: headers.host_rewrite.clone(),
        headers,
        weighted: several,
        destinations,
        fault,
        timeout,
        retries,
        mirrors,
    })
}

fn route_destination(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    destination: &RouteDestination,
    several: bool,
) -> Result<Destination, PolicyError> {
    crate::policy::reject_other(translator, id, field, &destination.other)?;
    let reference = &destination.destination;
    let port = reference.port.as_ref().map(|p| p.number).ok_or_else(|| {
        translator.error(
            id,
            format!("{field}: destination.port.number is required by local-mesh (the port to call on {})", reference.host),
        )
    })?;
    let weight = match (destination.weight, several) {
        (Some(weight), _) => weight,
        (None, false) => 100,
        (None, true) => {
            return Err(translator.error(
                id,
                format!("{field}: weight is required when there are several destinations"),
            ));
        }
    };
    Ok(Destination {
        cluster: outbound_name(port, reference.subset.as_deref(), &reference.host),
        host: reference.host.clone(),
        port,
        subset: reference.subset.clone(),
        weight,
        headers: destination
            .headers
            .as_ref()
            .map(header_operations)
            .unwrap_or_default(),
    })
}

/// The port of a host that declares exactly one (a mirror without `port`).
fn single_port(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    host: &str,
    namespace: &str,
) -> Result<u16, PolicyError> {
    match translator
        .visible_service(namespace, host)
        .map(|s| s.ports.as_slice())
    {
        Some([port]) => Ok(port.number),
        _ => Err(translator.error(id, format!("{field}.port.number is required for {host}"))),
    }
}

/// istiod's `TranslateHeadersOperations`: `host`/`:authority` in `set` (else `add`) rewrites Host.
fn header_operations(headers: &manifest::Headers) -> HeaderOperations {
    let mut out = HeaderOperations::default();
    let is_authority = |name: &str| name.eq_ignore_ascii_case("host") || name == ":authority";
    if let Some(request) = &headers.request {
        let mut set_authority = None;
        let mut add_authority = None;
        for (name, value) in &request.set {
            if is_authority(name) {
                set_authority = Some(value.clone());
            } else {
                out.request_set.push((name.clone(), value.clone()));
            }
        }
        for (name, value) in &request.add {
            if is_authority(name) {
                add_authority = Some(value.clone());
            } else {
                out.request_add.push((name.clone(), value.clone()));
            }
        }
        out.host_rewrite = set_authority.or(add_authority);
        out.request_remove = request.remove.clone();
    }
    if let Some(response) = &headers.response {
        out.response_set = response
            .set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.response_add = response
            .add
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.response_remove = response.remove.clone();
    }
    out
}

fn route_match(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    condition: &HttpMatch,
) -> Result<RouteMatch, PolicyError> {
    crate::policy::reject_other(translator, id, field, &condition.other)?;
    let path = condition
        .uri
        .as_ref()
        .map(|uri| {
            string_match(translator, id, &format!("{field}.uri"), uri).map(|m| match m {
                StringMatch::Exact(v) => PathMatch::Exact(v),
                StringMatch::Prefix(v) => PathMatch::Prefix(v),
                StringMatch::Regex(v) => PathMatch::Regex(v),
            })
        })
        .transpose()?;
    let mut headers = Vec::new();
    for (name, value) in &condition.headers {
        headers.push(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match(translator, id, &format!("{field}.headers.{name}"), value)?,
        });
    }
    Ok(RouteMatch { path, headers })
}

fn string_match(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    value: &manifest::StringMatch,
) -> Result<StringMatch, PolicyError> {
    crate::policy::reject_other(translator, id, field, &value.other)?;
    match (&value.exact, &value.prefix, &value.regex) {
        (Some(v), None, None) => Ok(StringMatch::Exact(v.clone())),
        (None, Some(v), None) => Ok(StringMatch::Prefix(v.clone())),
        (None, None, Some(v)) => Ok(StringMatch::Regex(v.clone())),
        _ => Err(translator.error(
            id,
            format!("{field} needs exactly one of exact, prefix, regex"),
        )),
    }
}

/// istiod's `TranslateFault`: a delay without `percentage` gets 0 %, an abort none at all;
/// either way it never fires.
fn fault(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    fault: &manifest::Fault,
) -> Result<Option<Fault>, PolicyError> {
    crate::policy::reject_other(translator, id, &format!("{field}.fault"), &fault.other)?;
    let abort = match &fault.abort {
        None => None,
        Some(abort) => {
            let field = format!("{field}.fault.abort");
            fault_fields(translator, id, &field, &abort.other)?;
            let status = abort
                .http_status
                .ok_or_else(|| translator.error(id, format!("{field} needs httpStatus")))?;
            if !(200..=599).contains(&status) {
                return Err(translator.error(
                    id,
                    format!("{field}.httpStatus {status} is not an HTTP status"),
                ));
            }
            let percent = percentage(translator, id, &field, &abort.percentage)?;
            Some(Abort { status, percent })
        }
    };
    let delay = match &fault.delay {
        None => None,
        Some(delay) => {
            let field = format!("{field}.fault.delay");
            fault_fields(translator, id, &field, &delay.other)?;
            let fixed = delay.fixed_delay.as_ref().ok_or_else(|| {
                translator.error(
                    id,
                    format!(
                        "{field} needs fixedDelay (exponentialDelay is not supported by istiod)"
                    ),
                )
            })?;
            let fixed = translator.duration(id, &format!("{field}.fixedDelay"), fixed)?;
            if fixed < Duration::from_millis(1) {
                return Err(
                    translator.error(id, format!("{field}.fixedDelay must be at least 1ms"))
                );
            }
            let percent = percentage(translator, id, &field, &delay.percentage)?.unwrap_or(0.0);
            Some(Delay { fixed, percent })
        }
    };
    Ok((abort.is_some() || delay.is_some()).then_some(Fault { delay, abort }))
}

/// What an abort and a delay share: the deprecated `percent` refused, and no field this mesh
/// does not know.
fn fault_fields(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    other: &manifest::Other,
) -> Result<(), PolicyError> {
    if other.contains_key("percent") {
        return Err(translator.error(
            id,
            format!("{field}.percent is deprecated; use percentage.value"),
        ));
    }
    crate::policy::reject_other(translator, id, field, other)
}

/// An abort's or a delay's `percentage.value`, when given, within 0..=100.
fn percentage(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    percentage: &Option<manifest::Percentage>,
) -> Result<Option<f64>, PolicyError> {
    percentage
        .as_ref()
        .map(|p| {
            percent(
                translator,
                id,
                &format!("{field}.percentage.value"),
                p.value,
            )
        })
        .transpose()
}

fn percent(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    value: f64,
) -> Result<f64, PolicyError> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(translator.error(id, format!("{field} {value} is not within 0..=100")))
    }
}

/// istiod's `retry.ConvertPolicy`.
fn retries(
    translator: &Translator<'_>,
    id: &ResourceId,
    field: &str,
    policy: &manifest::RetryPolicy,
) -> Result<Retries, PolicyError> {
    let field = format!("{field}.retries");
    crate::policy::reject_other(translator, id, &field, &policy.other)?;
    let attempts = policy.attempts.unwrap_or(0);
    if attempts <= 0 {
        return Ok(Retries::Disabled);
    }
    let attempts = u32::try_from(attempts)
        .map_err(|_| translator.error(id, format!("{field}.attempts {attempts} is too large")))?;
    let Retries::Enabled {
        mut retry_on,
        mut retriable_status_codes,
        ..
    } = Retries::istio_default()
    else {
        unreachable!("the default retries are enabled")
    };
    if let Some(conditions) = policy.retry_on.as_deref().filter(|c| !c.trim().is_empty()) {
        retry_on.clear();
        retriable_status_codes.clear();
        for condition in conditions
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if let Ok(code) = condition.parse::<u16>() {
                retriable_status_codes.push(code);
            } else if RETRY_CONDITIONS.contains(&condition) {
                retry_on.push(condition.to_owned());
            } else {
                return Err(translator.error(
                    id,
                    format!("{field}.retryOn: unknown condition {condition:?}"),
                ));
            }
        }
        if !retriable_status_codes.is_empty()
            && !retry_on.iter().any(|c| c == "retriable-status-codes")
        {
            retry_on.push("retriable-status-codes".to_owned());
        }
    }
    let per_try_timeout = policy
        .per_try_timeout
        .as_ref()
        .map(|value| translator.duration(id, &format!("{field}.perTryTimeout"), value))
        .transpose()?;
    let backoff = policy
        .backoff
        .as_ref()
        .map(|value| translator.duration(id, &format!("{field}.backoff"), value))
        .transpose()?;
    Ok(Retries::Enabled {
        attempts,
        per_try_timeout,
        retry_on,
        retriable_status_codes,
        previous_hosts: policy.retry_ignore_previous_hosts.unwrap_or(true),
        backoff,
    })
}
