// Package pki holds Shoal's cluster trust material: the cluster certificate
// authority, node and client certificates, the TLS configurations nodes use to
// talk to each other, join tokens, and the keyring that encrypts secrets (and
// the CA key) at rest.
//
// Everything here uses only the standard library: ECDSA P-256 keys, X.509
// certificates, AES-256-GCM and SHA-256.
//
// # Trust model
//
// A cluster has one self-signed CA (see [NewCA]). Nodes are addressed by IP
// and identified by a UUID, never a hostname, so node-to-node TLS verifies the
// peer's chain against the cluster CA and ignores names ([ClientTLSConfig],
// [ServerTLSConfig]). A node certificate carries its node ID as the URI SAN
// shoal://node/<id> ([NodeIDFromCert]), the Kubernetes-style subject
// CN=system:node:<name>, O=system:nodes, and both server and client auth so the
// same certificate serves the API and dials peers.
//
// A joining node does not have the CA yet. Its join token ([Token]) pins the
// CA by [Hash] (SHA-256 of the CA's SubjectPublicKeyInfo); [PinnedTLSConfig]
// aborts the handshake, before any application data is sent, unless the server
// presents that CA in its chain and its leaf verifies against it. Servers
// therefore send leaf+CA ([TLSCertificate]). Token secrets are stored only as
// [HashSecret] digests and compared in constant time ([VerifySecret]).
//
// # At-rest encryption
//
// A [Keyring] seals values with AES-256-GCM under its primary key and opens
// values sealed under any key it holds, so keys can rotate ([Keyring.Rotate])
// without rewriting old data first. The sealed format is self-describing
// ([IsSealed]); see [Keyring.Seal].
//
// # Concurrency
//
// [CA] values are immutable after construction and safe for concurrent use
// (issuing only reads them). [Keyring] methods are safe for concurrent use; a
// Rotate is atomic with respect to Seal and Open. Functions that return
// *tls.Config return a fresh value on each call; the caller owns it.
package pki
