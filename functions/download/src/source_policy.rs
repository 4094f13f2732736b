//! Which URLs may be fetched. File URLs come out of callback bodies, so they are untrusted.
//!
//! `ALLOWED_SOURCE_HOSTS` is a comma-separated list of entries of three kinds:
//!
//! * `*.example.com`: any subdomain of `example.com`, at any depth (`a.example.com`,
//!   `a.b.example.com`), but **not** `example.com` itself; list that separately if wanted.
//! * `files.example.com`: exactly that host.
//! * `http://127.0.0.1:3001` (an exact origin: scheme, host and, optionally, port, which
//!   otherwise is the scheme's default): exactly that origin, even over plain `http` and
//!   even when the host is or resolves to a loopback or private address. This is how a local
//!   run allows its file server.
//!
//! A URL matched by a host pattern must be `https` on its default port (443: a file host
//! serves there; another port of a provider's public host is no file's, list its origin to
//! allow one) and its host must resolve only to public addresses (checked when connecting,
//! see `source.rs`); an IP-literal host is checked here.

use std::net::IpAddr;

use url::{Host, Url};

use crate::address::{AddressClass, classify};

/// The provider's file hosts.
pub const DEFAULT_ALLOWED_SOURCE_HOSTS: &str =
    "*.aiquickdraw.com,*.api.box,*.suno.ai,*.erweima.ai,*.kie.ai,*.sunoapi.org";

/// The parsed `ALLOWED_SOURCE_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    patterns: Vec<HostPattern>,
    origins: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*.suffix`: hosts ending in `.suffix`.
    Subdomains(String),
    Exact(String),
}

/// An exact origin: scheme, host (lower-case; IPv6 in brackets, as URLs spell it), port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// How a URL that passed the policy may be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Matched by a host pattern: its host must resolve to public addresses only.
    PublicOnly,
    /// Its exact origin is listed: any address is fine.
    ListedOrigin,
}

/// Why an `ALLOWED_SOURCE_HOSTS` entry is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct PolicyError {
    pub entry: String,
    pub reason: String,
}

/// Why a URL may not be fetched; always permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a usable URL: {0}")]
    BadUrl(String),
    #[error("{prefix}{0}", prefix = stemvault_vault::reason::REFUSED_SOURCE)]
    Refused(String),
}

impl SourcePolicy {
    /// Parse a comma-separated list; blank entries are ignored, an empty list allows nothing.
    pub fn parse(list: &str) -> Result<SourcePolicy, PolicyError> {
        let mut policy = SourcePolicy { patterns: Vec::new(), origins: Vec::new() };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |reason: &str| PolicyError { entry: entry.to_owned(), reason: reason.to_owned() };
            if entry.contains("://") {
                policy.origins.push(parse_origin(entry).map_err(error)?);
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                let suffix = normalise_hostname(suffix).ok_or_else(|| error("not a host name after `*.`"))?;
                policy.patterns.push(HostPattern::Subdomains(suffix));
            } else {
                let host = normalise_hostname(entry).ok_or_else(|| {
                    error("expected `*.domain`, a host name, or an origin such as `https://host:port`")
                })?;
                policy.patterns.push(HostPattern::Exact(host));
            }
        }
        Ok(policy)
    }

    /// Check one URL (the first one or a redirect target) before connecting to it.
    pub fn check(&self, url: &Url) -> Result<Access, Refusal> {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(Refusal::BadUrl(format!("scheme {scheme:?} is not http or https")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::BadUrl("URLs with credentials are not fetched".into()));
        }
        let host = url.host().ok_or_else(|| Refusal::BadUrl("no host".into()))?;
        let port = url.port_or_known_default().ok_or_else(|| Refusal::BadUrl("no port".into()))?;
        let host_text = host.to_string();
        if self.origins.iter().any(|o| o.scheme == scheme && o.host == host_text && o.port == port) {
            return Ok(Access::ListedOrigin);
        }
        if scheme != "https" {
            return Err(Refusal::Refused(format!(
                "{scheme}://{host_text}:{port} is not https and not a listed origin"
            )));
        }
        let name = match &host {
            Host::Domain(d) => d.trim_end_matches('.').to_owned(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        if !self.patterns.iter().any(|p| p.matches(&name)) {
            return Err(Refusal::Refused(format!(
                "host {host_text} is not in ALLOWED_SOURCE_HOSTS (the stack's AllowedSourceHosts)"
            )));
        }
        // An IP-literal host is never resolved, so its address is checked here.
        let ip = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(class) = ip.map(classify).filter(|c| !c.is_public()) {
            return Err(refused_address(&host_text, &host_text, class));
        }
        if port != HTTPS_PORT {
            return Err(Refusal::Refused(format!(
                "https://{host_text}:{port}: a host pattern allows port {HTTPS_PORT} only; list the origin to allow it"
            )));
        }
        Ok(Access::PublicOnly)
    }
}

/// The one port a URL matched by a host pattern may name (https's default).
const HTTPS_PORT: u16 = 443;

/// The refusal for a host that is, or resolves to, a non-public address.
pub fn refused_address(host: &str, address: &str, class: AddressClass) -> Refusal {
    Refusal::Refused(format!("host {host} is at {address}, {}; list its exact origin to allow it", class.describe()))
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

fn parse_origin(entry: &str) -> Result<Origin, &'static str> {
    let url = Url::parse(entry).map_err(|_| "not a URL")?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("only http and https origins can be listed");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("an origin has no credentials");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("an origin has no path, query or fragment");
    }
    let host = url.host_str().ok_or("an origin needs a host")?;
    let port = url.port_or_known_default().ok_or("an origin needs a port")?;
    Ok(Origin { scheme: url.scheme().to_owned(), host: host.trim_end_matches('.').to_owned(), port })
}

/// Lower-case a DNS name (or IP literal, IPv6 with or without brackets) and check it is one;
/// None when it is not.
fn normalise_hostname(raw: &str) -> Option<String> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    let unbracketed = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(&name);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &str) -> SourcePolicy {
        SourcePolicy::parse(list).unwrap()
    }

    fn check(p: &SourcePolicy, url: &str) -> Result<Access, Refusal> {
        p.check(&Url::parse(url).unwrap())
    }

    #[test]
    fn subdomain_patterns_match_any_depth_but_not_the_bare_domain() {
        let p = policy(DEFAULT_ALLOWED_SOURCE_HOSTS);
        for ok in [
            "https://tempfile.aiquickdraw.com/s/x.mp3",
            "https://cdn1.suno.ai/a.mp3?token=1",
            "https://a.b.kie.ai/x",
            "https://musicfile.api.box/x.mp3",
            "https://FILES.SUNOAPI.ORG:443/x",
            "https://x.erweima.ai./y",
        ] {
            assert_eq!(check(&p, ok), Ok(Access::PublicOnly), "{ok}");
        }
        for refused in [
            "https://suno.ai/x",
            "https://evilsuno.ai/x",
            "https://suno.ai.evil.com/x",
            "https://example.com/x",
            "https://kie.ai/x",
            // Another port of a provider's host: no file host serves there.
            "https://files.sunoapi.org:8443/x",
            "https://x.kie.ai:6379/",
        ] {
            let refusal = check(&p, refused).unwrap_err();
            assert!(matches!(refusal, Refusal::Refused(_)), "{refused}");
            // Read back by the reconciler as a host the operator may list.
            assert!(stemvault_vault::reason::refused_source(&refusal.to_string()), "{refusal}");
        }
    }

    #[test]
    fn exact_hosts_match_only_themselves() {
        let p = policy("files.example.com");
        assert_eq!(check(&p, "https://files.example.com/a"), Ok(Access::PublicOnly));
        assert!(check(&p, "https://x.files.example.com/a").is_err());
        assert!(check(&p, "https://example.com/a").is_err());
    }

    #[test]
    fn only_https_unless_the_exact_origin_is_listed() {
        let p = policy("*.suno.ai,http://127.0.0.1:3001,https://localhost");
        assert!(matches!(check(&p, "http://cdn1.suno.ai/a.mp3"), Err(Refusal::Refused(_))));
        assert_eq!(check(&p, "http://127.0.0.1:3001/a.mp3"), Ok(Access::ListedOrigin));
        assert_eq!(check(&p, "https://localhost/a"), Ok(Access::ListedOrigin));
        assert_eq!(check(&p, "https://localhost:443/a"), Ok(Access::ListedOrigin));
        // Another port, another scheme, or another spelling of the address is another origin.
        assert!(check(&p, "http://127.0.0.1:3002/a.mp3").is_err());
        assert!(check(&p, "https://127.0.0.1:3001/a.mp3").is_err());
        assert!(check(&p, "http://localhost:3001/a.mp3").is_err());
        assert!(check(&p, "https://localhost:8443/a").is_err());
        // Listed, another port of a host a pattern allows is allowed.
        let p = policy("*.suno.ai,https://cdn1.suno.ai:8443");
        assert_eq!(check(&p, "https://cdn1.suno.ai:8443/a.mp3"), Ok(Access::ListedOrigin));
        assert!(check(&p, "https://cdn2.suno.ai:8443/a.mp3").is_err());
    }

    /// Listed as hosts, so the allow-list lets them by: the address check alone refuses an IP
    /// literal that is not public, naming what it is (a metadata endpoint, a private network,
    /// loopback spelled as IPv4 inside IPv6).
    #[test]
    fn ip_literals_listed_as_hosts_are_refused_by_their_address() {
        let p = policy("169.254.169.254,10.0.0.1,100.64.0.1,127.0.0.1,[::ffff:127.0.0.1],[::ffff:a9fe:a9fe],[fe80::1]");
        for (refused, class) in [
            ("https://169.254.169.254/latest/meta-data", "a link-local address"),
            ("https://10.0.0.1/a", "a private address"),
            ("https://100.64.0.1/a", "a carrier-grade NAT address"),
            ("https://0x7f.1/a", "a loopback address"),
            ("https://[::ffff:127.0.0.1]/a", "a loopback address"),
            ("https://[::ffff:a9fe:a9fe]/latest/meta-data", "a link-local address"),
            ("https://[fe80::1]/a", "a link-local address"),
        ] {
            match check(&p, refused) {
                Err(Refusal::Refused(why)) => assert!(why.contains(class), "{refused}: {why}"),
                other => panic!("{refused}: {other:?}"),
            }
        }
    }

    #[test]
    fn ip_literals_are_refused_unless_listed_and_public() {
        let p = policy("*.suno.ai,8.8.8.8,127.0.0.1,[::1]");
        assert_eq!(check(&p, "https://8.8.8.8/a"), Ok(Access::PublicOnly));
        for refused in [
            "https://127.0.0.1/a",
            "https://[::1]/a",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/a",
            "https://0x7f.1/a",
            "https://[::ffff:127.0.0.1]/a",
        ] {
            assert!(matches!(check(&p, refused), Err(Refusal::Refused(_))), "{refused}");
        }
        let listed = policy("http://[::1]:3001");
        assert_eq!(check(&listed, "http://[::1]:3001/a"), Ok(Access::ListedOrigin));
    }

    #[test]
    fn bad_urls_are_refused_as_such() {
        let p = policy("*.suno.ai");
        assert!(matches!(check(&p, "ftp://cdn1.suno.ai/a"), Err(Refusal::BadUrl(_))));
        assert!(matches!(check(&p, "file:///etc/passwd"), Err(Refusal::BadUrl(_))));
        assert!(matches!(check(&p, "https://user:pw@cdn1.suno.ai/a"), Err(Refusal::BadUrl(_))));
    }

    #[test]
    fn bad_entries_are_configuration_errors() {
        for bad in ["*.", "*", "exa mple.com", "http://h/path", "ftp://h", "https://u:p@h", "-a.com", "*.a..b"] {
            assert!(SourcePolicy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(SourcePolicy::parse(" , ").unwrap(), SourcePolicy { patterns: vec![], origins: vec![] });
        let p = policy(" *.Suno.AI , Files.Example.com. ");
        assert_eq!(
            p.patterns,
            vec![HostPattern::Subdomains("suno.ai".into()), HostPattern::Exact("files.example.com".into())]
        );
    }
}
