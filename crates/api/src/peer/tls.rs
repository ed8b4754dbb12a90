//! Mutual TLS 1.3 between members with raw ed25519 public keys (RFC 7250) instead of
//! certificates: each side presents its node key, and each side accepts only the key the mesh's
//! signed membership holds for that node. There is no CA; membership is the trust root.

use std::sync::Arc;

use infermesh_mesh::{node_id_from_public_key, Directory};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// DER of an ed25519 SubjectPublicKeyInfo up to the key: SEQUENCE { SEQUENCE { OID 1.3.101.112 },
/// BIT STRING (33 bytes) }. An ed25519 SPKI is exactly this followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// PKCS#8 v1 of an ed25519 key up to the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Peer hosts in URLs are `<node id>` under this suffix; the name never reaches DNS (the peer
/// client resolves it from membership), and `.invalid` guarantees it could not.
pub const PEER_HOST_SUFFIX: &str = ".peer.infermesh.invalid";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The 32-byte key of an ed25519 SPKI, and nothing else: any other shape is refused.
fn ed25519_key(spki: &[u8]) -> Option<[u8; 32]> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX)?;
    key.try_into().ok()
}

fn spki_of(key: &ed25519_dalek::VerifyingKey) -> Vec<u8> {
    let mut v = ED25519_SPKI_PREFIX.to_vec();
    v.extend_from_slice(key.as_bytes());
    v
}

/// The node key as rustls signs with it, presented as a raw public key.
pub fn certified_key(key: &ed25519_dalek::SigningKey) -> Result<Arc<CertifiedKey>, Error> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(key.as_bytes());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
    let signer = provider().key_provider.load_private_key(der)?;
    let spki = CertificateDer::from(spki_of(&key.verifying_key()));
    Ok(Arc::new(CertifiedKey::new(vec![spki], signer)))
}

/// Whether `spki` is the key the membership holds for `node_id` (a live member).
fn is_member_key(dir: &Directory, node_id: &str, spki: &[u8]) -> Result<(), Error> {
    let key = ed25519_key(spki)
        .ok_or_else(|| Error::General("peer key is not a raw ed25519 public key".into()))?;
    if node_id_from_public_key(&key) != node_id {
        return Err(Error::General(format!("peer key is not node {node_id}'s")));
    }
    match dir.peer(node_id) {
        Some(p) if p.public_key == key => Ok(()),
        Some(_) => Err(Error::General(format!(
            "peer key differs from the one node {node_id} signed into the mesh"
        ))),
        None => Err(Error::General(format!(
            "node {node_id} is not a live member of this mesh"
        ))),
    }
}

fn verify13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// The client's check of the server: the key of the node named in the URL's host.
#[derive(Debug)]
struct ServerIsMember(DirectoryDebug);

/// The server's check of the client: any live member's own key.
#[derive(Debug)]
struct ClientIsMember(DirectoryDebug);

struct DirectoryDebug(Directory);

impl std::fmt::Debug for DirectoryDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}

/// The handshake half both verifiers share: TLS 1.3 only, ed25519 only, raw public keys only.
macro_rules! member_handshake {
    () => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Err(Error::General("TLS 1.2 is not used between members".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    };
}

impl ServerCertVerifier for ServerIsMember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let ServerName::DnsName(name) = server_name else {
            return Err(Error::General("peer URL does not name a node".into()));
        };
        let node_id = name
            .as_ref()
            .strip_suffix(PEER_HOST_SUFFIX)
            .ok_or_else(|| Error::General("peer URL does not name a node".into()))?;
        is_member_key(&self.0 .0, node_id, end_entity.as_ref())?;
        Ok(ServerCertVerified::assertion())
    }

    member_handshake!();
}

impl ClientCertVerifier for ClientIsMember {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = ed25519_key(end_entity.as_ref())
            .ok_or_else(|| Error::General("client key is not a raw ed25519 public key".into()))?;
        is_member_key(
            &self.0 .0,
            &node_id_from_public_key(&key),
            end_entity.as_ref(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    member_handshake!();
}

/// The node id a verified client presented (after the handshake).
pub fn peer_node_id(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let key = ed25519_key(certs?.first()?.as_ref())?;
    Some(node_id_from_public_key(&key))
}

pub fn client_config(
    key: &ed25519_dalek::SigningKey,
    dir: Directory,
) -> Result<rustls::ClientConfig, Error> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerIsMember(DirectoryDebug(dir))))
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(key)?),
        ));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

pub fn server_config(
    key: &ed25519_dalek::SigningKey,
    dir: Directory,
) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientIsMember(DirectoryDebug(dir))))
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(key)?),
        ));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_ed25519_spkis_yield_a_key() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let spki = spki_of(&k.verifying_key());
        assert_eq!(ed25519_key(&spki), Some(*k.verifying_key().as_bytes()));
        let mut longer = spki.clone();
        longer.push(0);
        assert_eq!(ed25519_key(&longer), None);
        assert_eq!(ed25519_key(&spki[..43]), None);
        assert_eq!(ed25519_key(&spki[1..]), None);
    }

    #[test]
    fn the_node_key_loads_as_a_tls_signer() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        let ck = certified_key(&k).unwrap();
        assert_eq!(ck.cert[0].as_ref(), spki_of(&k.verifying_key()).as_slice());
    }
}
