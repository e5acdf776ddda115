//! Stream mode's options (`--mode stream`, `--proxy-protocol`, `--target-tls` and its companions)
//! checked against the rest, into [`StreamSettings`]. Reads the `--target-ca` file (once, at
//! start); opens no socket.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::cli::{Mode, StreamOpts, TcpcopyOpts};

/// How stream mode reaches the target.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Each connection begins with a PROXY protocol v2 header (the real client's address).
    pub proxy_protocol: bool,
    pub tls: Option<TlsSettings>,
}

/// TLS towards the target.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub config: Arc<ClientConfig>,
    /// The name asked for (`--target-sni`); `None`: the target's address.
    pub sni: Option<ServerName<'static>>,
}

/// Stream mode's settings (`None` in packet mode), after checking the options that conflict.
pub fn settings(o: &TcpcopyOpts) -> Result<Option<StreamSettings>, String> {
    let s = &o.stream;
    if s.mode != Mode::Stream {
        return packet_mode(s).map(|()| None);
    }
    let refuse = |opt: &str, why: &str| Err(format!("{opt}: not in stream mode ({why})"));
    if o.fake_client.is_some() {
        return refuse(
            "-c/--fake-client",
            "the kernel gives each connection this host's address; leave -c out, and see --proxy-protocol",
        );
    }
    if o.intercept.is_some() {
        return refuse(
            "-s/--intercept",
            "tcpcopy reads the target's answers itself; leave -s out",
        );
    }
    if o.send_layer.is_some() || o.output_device.is_some() {
        return refuse(
            "--send-layer/-o",
            "the kernel sends over its own connections",
        );
    }
    if o.secret_file.is_some() {
        return refuse("--secret-file", "there is no intercept channel");
    }
    let tls = if s.target_tls {
        Some(tls(s)?)
    } else {
        for (set, opt) in [
            (s.target_ca.is_some(), "--target-ca"),
            (s.target_sni.is_some(), "--target-sni"),
            (s.target_insecure, "--target-insecure"),
        ] {
            if set {
                return Err(format!("{opt}: only with --target-tls"));
            }
        }
        None
    };
    Ok(Some(StreamSettings {
        proxy_protocol: s.proxy_protocol,
        tls,
    }))
}

/// Stream mode's options make no sense in packet mode.
fn packet_mode(s: &StreamOpts) -> Result<(), String> {
    for (set, opt) in [
        (s.proxy_protocol, "--proxy-protocol"),
        (s.target_tls, "--target-tls"),
        (s.target_ca.is_some(), "--target-ca"),
        (s.target_sni.is_some(), "--target-sni"),
        (s.target_insecure, "--target-insecure"),
    ] {
        if set {
            return Err(format!("{opt}: only with --mode stream"));
        }
    }
    Ok(())
}

fn tls(s: &StreamOpts) -> Result<TlsSettings, String> {
    // ring builds from crates.io alone (aws-lc-rs needs cmake); its lack of post-quantum key
    // exchange is what the deprecation is about, no weakness for a test target.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("--target-tls: {e}"))?;
    let config = if s.target_insecure {
        if s.target_ca.is_some() {
            return Err("--target-insecure: checks no certificate; leave --target-ca out".into());
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(s.target_ca.as_deref())?)
            .with_no_client_auth()
    };
    let sni = match &s.target_sni {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|_| format!("--target-sni {name}: not a DNS name or IP address"))?,
        ),
        None => None,
    };
    Ok(TlsSettings {
        config: Arc::new(config),
        sni,
    })
}

/// The trust anchors: the certificates of `--target-ca`, or the Mozilla roots.
fn roots(ca: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let Some(path) = ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let name = path.display();
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--target-ca {name}: cannot read it ({e})"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--target-ca {name}: not PEM certificates ({e})"))?;
        store
            .add(cert)
            .map_err(|e| format!("--target-ca {name}: a certificate is not usable ({e})"))?;
    }
    if store.is_empty() {
        return Err(format!("--target-ca {name}: holds no PEM certificate"));
    }
    Ok(store)
}

/// `--target-insecure`: every certificate is accepted; signatures are still checked, so the
/// handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::TcpcopyCli;
    use crate::config::LiveConfig;

    fn stream(extra: &[&str]) -> Result<LiveConfig, String> {
        let args = ["tcpcopy", "-x", "80-198.18.0.30:80", "--mode", "stream"];
        let cli = TcpcopyCli::try_parse_from(args.iter().chain(extra)).unwrap();
        LiveConfig::from_opts(&cli.opts)
    }

    fn error(extra: &[&str]) -> String {
        stream(extra).err().unwrap_or_default()
    }

    #[test]
    fn stream_mode_has_no_intercept_and_sends_large_segments() {
        let c = stream(&["--proxy-protocol"]).unwrap();
        assert!(c.intercepts.is_empty());
        let s = c.stream.unwrap();
        assert!(s.proxy_protocol && s.tls.is_none());
        assert_eq!(c.core.mss, bridge::MAX_SEGMENT as u16);
        // Packet mode: intercepts on the targets, as ever.
        let cli = TcpcopyCli::try_parse_from(["tcpcopy", "-x", "80-198.18.0.30:80"]).unwrap();
        let p = LiveConfig::from_opts(&cli.opts).unwrap();
        assert!(p.stream.is_none() && p.intercepts.len() == 1);
    }

    #[test]
    fn options_of_packet_mode_are_refused_in_one_line() {
        assert!(error(&["-c", "198.19.0.0/24"]).starts_with("-c/--fake-client: not in stream mode"));
        assert!(error(&["-s", "198.18.0.40"]).starts_with("-s/--intercept: not in stream mode"));
        assert!(error(&["--send-layer", "link"]).starts_with("--send-layer/-o"));
        for e in [error(&["-c", "198.19.0.1"]), error(&["-s", "198.18.0.40"])] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn tls_options_need_tls_and_stream_mode() {
        assert_eq!(
            error(&["--target-sni", "a.example"]),
            "--target-sni: only with --target-tls"
        );
        let cli =
            TcpcopyCli::try_parse_from(["tcpcopy", "-x", "80-198.18.0.30:80", "--proxy-protocol"])
                .unwrap();
        assert_eq!(
            LiveConfig::from_opts(&cli.opts).err().unwrap(),
            "--proxy-protocol: only with --mode stream"
        );
        let tls = stream(&["--target-tls", "--target-sni", "a.example"]).unwrap();
        assert!(tls.stream.unwrap().tls.unwrap().sni.is_some());
        assert!(stream(&["--target-tls", "--target-insecure"]).is_ok());
    }

    #[test]
    fn a_bad_ca_file_is_one_line_naming_it() {
        let e = error(&["--target-tls", "--target-ca", "/nonexistent/ca.pem"]);
        assert!(
            e.starts_with("--target-ca /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let path = std::env::temp_dir().join(format!("tcpcopy-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = error(&["--target-tls", "--target-ca", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        assert!(e.ends_with("holds no PEM certificate"), "{e}");
    }
}
