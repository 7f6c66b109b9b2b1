//! Where a PostgreSQL database is: a libpq-style `postgres://` URL (several
//! hosts, and `target_session_attrs=read-write` when a standby may be
//! promoted), TLS by rustls with ring and the CAs the operator names, and
//! the password kept apart from the URL (from a file or the environment,
//! never the command line) and out of every message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postgres::Config;
use postgres::config::{Host, SslMode};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DatabaseError;

/// An `r2d2` connection manager for a [`PgTarget`].
pub type Manager = PostgresConnectionManager<MakeRustlsConnect>;

/// A parsed database URL and the CA certificates its TLS trusts.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    root_certs: Option<PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL. Besides the options
    /// of the `postgres` crate (`sslmode=disable|prefer|require`,
    /// `target_session_attrs`, `connect_timeout`, ...), `sslrootcert=FILE`
    /// names the PEM certificates of the CAs the database server's
    /// certificate must chain to (its host name is checked too). Without
    /// `sslrootcert` the connection is not encrypted, and `sslmode=require`
    /// is refused. The parser's messages never quote the URL (it may hold
    /// a password).
    pub fn parse(url: &str) -> Result<Self, DatabaseError> {
        let bad = |why: &str| DatabaseError::Url(why.to_owned());
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "expected postgres://user@host[:port][,host2...]/database[?options]",
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut root_certs = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", file)) => root_certs = Some(PathBuf::from(file)),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: Config = rebuilt
            .parse()
            .map_err(|e: postgres::Error| DatabaseError::Url(e.to_string()))?;
        if root_certs.is_none() {
            if config.get_ssl_mode() == SslMode::Require {
                return Err(bad(
                    "sslmode=require needs sslrootcert=FILE: the CA certificates (PEM) that the database server's certificate chains to",
                ));
            }
            config.ssl_mode(SslMode::Disable);
        }
        if config.get_user().is_none() {
            return Err(bad("name the database user: postgres://USER@host/database"));
        }
        Ok(PgTarget { config, root_certs })
    }

    /// Sets the password (from a file or the environment, never the
    /// command line).
    pub fn with_password(mut self, password: &str) -> Self {
        self.config.password(password);
        self
    }

    /// Sets the server's `options` (e.g. `-c search_path=...`).
    pub fn with_options(mut self, options: &str) -> Self {
        self.config.options(options);
        self
    }

    /// The password the URL or [`with_password`](Self::with_password) gave.
    pub fn password(&self) -> Option<&[u8]> {
        self.config.get_password()
    }

    /// The URL without its password or options, for logs and errors.
    pub fn shown(&self) -> String {
        let c = &self.config;
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                match c.get_ports().get(i).or(c.get_ports().first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        format!(
            "postgres://{}@{}/{}",
            c.get_user().unwrap_or(""),
            hosts.join(","),
            c.get_dbname().unwrap_or("")
        )
    }

    /// The TLS connector: the CAs of `sslrootcert` (none: TLS is disabled
    /// by [`parse`](Self::parse) anyway).
    pub fn tls(&self) -> Result<MakeRustlsConnect, DatabaseError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.root_certs {
            let unreadable = |why: String| DatabaseError::RootCertificates {
                file: path.display().to_string(),
                why,
            };
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))?
            {
                roots
                    .add(cert.map_err(|e| unreadable(e.to_string()))?)
                    .map_err(|e| unreadable(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(unreadable("holds no certificate".into()));
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| DatabaseError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// One connection, outside any pool (the database's own words if it
    /// refuses). Blocking: not on an async runtime's threads.
    pub fn connect(&self) -> Result<postgres::Client, DatabaseError> {
        Ok(self.config.connect(self.tls()?)?)
    }

    /// A pool of at most `size` connections, one kept idle, waiting up to
    /// `patience` for a database that cannot be reached. A database that
    /// answers with a refusal (a wrong password, no such database or role)
    /// will not change its mind by waiting: that is said at once, in its
    /// words. Blocking: not on an async runtime's threads.
    pub fn pool(
        &self,
        size: u32,
        patience: Duration,
    ) -> Result<r2d2::Pool<Manager>, DatabaseError> {
        if let Err(DatabaseError::Postgres(e)) = self.connect()
            && e.as_db_error().is_some()
        {
            return Err(DatabaseError::Postgres(e));
        }
        let manager = Manager::new(self.config.clone(), self.tls()?);
        r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(patience)
            .build(manager)
            .map_err(|e| {
                // The pool's error says only "db error": ask once more for
                // the server's words (it may have come up refusing).
                DatabaseError::Unreachable(match self.connect() {
                    Err(direct) => direct.to_string(),
                    Ok(_) => e.to_string(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_waited_for_then_named() {
        let t = PgTarget::parse("postgres://lienthong:s3cret@127.0.0.1:1/registry").unwrap();
        let started = std::time::Instant::now();
        let Err(e) = t.pool(1, Duration::from_millis(300)) else {
            panic!("nothing listens on port 1")
        };
        assert!(matches!(e, DatabaseError::Unreachable(_)), "{e}");
        let said = e.to_string();
        assert!(!said.contains("s3cret"), "{said}");
        assert!(started.elapsed() >= Duration::from_millis(300), "waited");
    }

    #[test]
    fn urls_are_parsed_and_shown_without_password_or_options() {
        let t = PgTarget::parse(
            "postgres://lt:secret@db1:5432,db2:5433/lienthong?target_session_attrs=read-write",
        )
        .unwrap()
        .with_options("-c search_path=x");
        assert_eq!(t.shown(), "postgres://lt@db1:5432,db2:5433/lienthong");
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for (url, why) in [
            ("mysql://lt:secret@db/x", "expected postgres://"),
            ("postgres://db/x", "name the database user"),
            (
                "postgres://lt:secret@db/x?sslmode=require",
                "sslmode=require needs sslrootcert",
            ),
            ("postgres://lt:secret@db/x?bogus=1", "database URL:"),
        ] {
            let err = PgTarget::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn unreadable_root_certificates_are_named() {
        let t =
            PgTarget::parse("postgres://lt@db/x?sslrootcert=/nonexistent/ca.pem&sslmode=require")
                .unwrap();
        let err = t.tls().err().expect("refused").to_string();
        assert!(
            err.starts_with("sslrootcert /nonexistent/ca.pem: "),
            "{err}"
        );
    }
}
