// Optional HTTPS mode with mutual TLS client authentication (RFC 8705): set PROVIDER_TLS_CERT
// and PROVIDER_TLS_KEY (PEM files) to serve over TLS and ask every client for a certificate;
// PROVIDER_TLS_CLIENT_CA (PEM file) names the CAs of tls_client_auth certificates. Without them
// the provider serves plain HTTP as before.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';

export const MTLS_AUTH_METHODS = ['tls_client_auth', 'self_signed_tls_client_auth'];

// serverOptions are https.createServer's options, or undefined for plain HTTP.
export function serverOptions() {
  const { PROVIDER_TLS_CERT: cert, PROVIDER_TLS_KEY: key, PROVIDER_TLS_CLIENT_CA: ca } = process.env;
  if (!cert && !key) return undefined;
  if (!cert || !key) throw new Error('set both PROVIDER_TLS_CERT and PROVIDER_TLS_KEY');
  return {
    cert: readFileSync(cert),
    key: readFileSync(key),
    ...(ca ? { ca: readFileSync(ca) } : {}),
    // Ask for a certificate, accept any: self-signed ones are checked against the client's
    // registered keys, and socket.authorized says whether a chain led to the CA.
    requestCert: true,
    rejectUnauthorized: false,
  };
}

function getCertificate(ctx) {
  const peer = ctx.socket.getPeerCertificate?.();
  if (!peer || !peer.raw) return undefined;
  return new crypto.X509Certificate(peer.raw);
}

// configure turns mTLS on in an oidc-provider configuration served at issuer over TLS:
// both mTLS client authentication methods, certificate-bound access tokens for the clients that
// ask (tls_client_certificate_bound_access_tokens), and mtls_endpoint_aliases in discovery.
export function configure(configuration, issuer) {
  configuration.clientAuthMethods = [...configuration.clientAuthMethods, ...MTLS_AUTH_METHODS];
  configuration.discovery = {
    ...configuration.discovery,
    mtls_endpoint_aliases: { token_endpoint: `${issuer}/token`, revocation_endpoint: `${issuer}/token/revocation` },
  };
  configuration.features.mTLS = {
    enabled: true,
    certificateBoundAccessTokens: true,
    selfSignedTlsClientAuth: true,
    tlsClientAuth: true,
    getCertificate,
    certificateAuthorized: (ctx) => ctx.socket.authorized === true,
    certificateSubjectMatches(ctx, property, expected) {
      const cert = getCertificate(ctx);
      if (property === 'tls_client_auth_subject_dn') return cert?.subject === expected;
      return false;
    },
  };
}
