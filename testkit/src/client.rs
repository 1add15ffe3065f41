//! HTTP clients for tests that ignore the proxy variables: a test's request for `127.0.0.1:N`
//! must reach `127.0.0.1:N` whatever `http_proxy` or `ALL_PROXY` say (the programs themselves
//! keep honouring them).

/// A reqwest client builder that never uses a proxy (add certificates, resolvers, timeouts).
pub fn direct_client_builder() -> reqwest::ClientBuilder {
    demo_common::tls::install_crypto_provider();
    reqwest::Client::builder().no_proxy()
}

/// A reqwest client that never uses a proxy.
pub fn direct_client() -> reqwest::Client {
    direct_client_builder()
        .build()
        .expect("a reqwest client without a proxy")
}
