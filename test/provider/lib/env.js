// Settings read from the environment once at start-up. Invalid values stop the server with a
// message rather than being silently replaced, so a typo in a test's env shows up immediately.

function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer (seconds), got ${JSON.stringify(raw)}`);
  }
  return value;
}

function nonNegativeInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

// "user:pass,user2:pass2". A password may itself contain ':' (only the first one splits).
function parseUsers(raw) {
  const users = new Map();
  for (const entry of raw.split(',')) {
    if (!entry.trim()) continue;
    const at = entry.indexOf(':');
    if (at <= 0) throw new Error(`PROVIDER_USERS entry ${JSON.stringify(entry)} is not user:password`);
    users.set(entry.slice(0, at).trim(), entry.slice(at + 1));
  }
  if (users.size === 0) throw new Error('PROVIDER_USERS names no user');
  return users;
}

export function readEnv() {
  return {
    port: nonNegativeInt('PORT', 0),
    urlFile: process.env.PROVIDER_URL_FILE || undefined,
    accessTokenTTL: positiveInt('ACCESS_TOKEN_TTL', 3600),
    refreshTokenTTL: positiveInt('REFRESH_TOKEN_TTL', 14 * 24 * 3600),
    introspectorSecret: process.env.INTROSPECTOR_SECRET || 'introspector-secret',
    users: parseUsers(process.env.PROVIDER_USERS || 'alice:alice-password'),
    extraScopes: (process.env.PROVIDER_SCOPES || '').split(/[\s,]+/).filter(Boolean),
    tokenDelayMs: nonNegativeInt('TOKEN_DELAY_MS', 0),
  };
}
