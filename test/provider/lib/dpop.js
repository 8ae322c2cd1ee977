// DPoP (RFC 9449). oidc-provider verifies proofs at the token endpoint (binding tokens to the
// proof's key) and at userinfo and other resource endpoints (checking the proof against the
// token); this configures server nonces (§8) and demands one in every proof, so that clients must
// follow use_dpop_nonce / DPoP-Nonce. Requests without a DPoP header are not affected.

import { randomBytes } from 'node:crypto';

export function dpopFeature() {
  return {
    enabled: true,
    nonceSecret: randomBytes(32),
    requireNonce: () => true,
  };
}
