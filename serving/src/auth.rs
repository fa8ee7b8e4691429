//! Entitlements: credentials -> principal -> scope (desks and accounts).

use std::collections::BTreeSet;

use lakehouse_lake::reference::Reference;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::PrincipalConfig;

/// Who is calling and what it may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Name (audit).
    pub name: String,
    all_desks: bool,
    all_accounts: bool,
    desks: BTreeSet<String>,
    accounts: BTreeSet<String>,
}

impl Principal {
    /// A caller that sees everything (no principals configured).
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            all_desks: true,
            all_accounts: true,
            desks: BTreeSet::new(),
            accounts: BTreeSet::new(),
        }
    }

    fn from_config(p: &PrincipalConfig) -> Principal {
        Principal {
            name: p.name.clone(),
            all_desks: p.desks.iter().any(|d| d == "*"),
            all_accounts: p.accounts.iter().any(|a| a == "*"),
            desks: p.desks.iter().filter(|d| *d != "*").cloned().collect(),
            accounts: p.accounts.iter().filter(|a| *a != "*").cloned().collect(),
        }
    }

    /// Sees everything.
    pub fn is_unrestricted(&self) -> bool {
        self.all_desks || self.all_accounts
    }

    /// May it see this desk as a whole?
    pub fn sees_desk(&self, desk: &str) -> bool {
        self.all_desks || self.all_accounts || self.desks.contains(desk)
    }

    /// May it see this account (whose desk the reference data gives)?
    pub fn sees_account(&self, account: &str, reference: &Reference) -> bool {
        self.all_accounts
            || self.all_desks
            || self.accounts.contains(account)
            || reference
                .accounts
                .get(account)
                .is_some_and(|a| self.desks.contains(&a.desk))
    }

    /// Refuses a request naming accounts or desks outside the scope.
    pub fn check_named(
        &self,
        accounts: &[String],
        desks: &[String],
        reference: &Reference,
    ) -> Result<(), Status> {
        if let Some(a) = accounts.iter().find(|a| !self.sees_account(a, reference)) {
            return Err(Status::permission_denied(format!(
                "{} may not see account {a:?}",
                self.name
            )));
        }
        if let Some(d) = desks.iter().find(|d| !self.sees_desk(d)) {
            return Err(Status::permission_denied(format!(
                "{} may not see desk {d:?}",
                self.name
            )));
        }
        Ok(())
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The configured principals, looked up by credential hash.
#[derive(Clone, Debug, Default)]
pub struct Entitlements {
    by_token: std::collections::HashMap<String, Principal>,
    by_cert: std::collections::HashMap<String, Principal>,
    open: bool,
}

impl Entitlements {
    /// From the configuration; with no principals, everyone is anonymous and unrestricted.
    pub fn new(principals: &[PrincipalConfig]) -> Entitlements {
        let mut e = Entitlements {
            open: principals.is_empty(),
            ..Entitlements::default()
        };
        for p in principals {
            if let Some(h) = &p.token_sha256 {
                e.by_token
                    .insert(h.to_ascii_lowercase(), Principal::from_config(p));
            }
            if let Some(h) = &p.cert_sha256 {
                e.by_cert
                    .insert(h.to_ascii_lowercase(), Principal::from_config(p));
            }
        }
        e
    }

    /// Everyone is let in (no principals configured).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The caller of a request: a bearer token in `authorization`, else the client
    /// certificate. UNAUTHENTICATED without valid credentials.
    pub fn authenticate<T>(&self, req: &tonic::Request<T>) -> Result<Principal, Status> {
        if let Some(v) = req.metadata().get("authorization") {
            let text = v
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization is not text"))?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("authorization must be \"Bearer <token>\"")
                })?;
            if self.open {
                return Ok(Principal::anonymous());
            }
            return self
                .by_token
                .get(&sha256_hex(token.trim().as_bytes()))
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown token"));
        }
        if let Some(certs) = req.peer_certs()
            && let Some(first) = certs.first()
            && let Some(p) = self.by_cert.get(&sha256_hex(first.as_ref()))
        {
            return Ok(p.clone());
        }
        if self.open {
            return Ok(Principal::anonymous());
        }
        Err(Status::unauthenticated(
            "no credentials: send \"authorization: Bearer <token>\" or a client certificate",
        ))
    }
}
