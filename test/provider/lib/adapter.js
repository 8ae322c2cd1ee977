// Storage adapter for oidc-provider: one process-wide Map, nothing persisted.
//
// Why not oidc-provider's bundled MemoryAdapter: it is an LRU capped at 1000 entries, shared by
// clients, tokens and grants, so a load test that mints a few thousand tokens silently evicts
// dynamically registered clients and live refresh tokens. This one never evicts a live entry; it
// drops entries only once they expire (lazily on read, and by a periodic sweep).

const store = new Map(); // "<Model>:<id>" -> { payload, expiresAt (ms epoch or Infinity) }
const grantMembers = new Map(); // grantId -> Set of "<Model>:<id>" keys issued under that grant

// Models whose payload carries a grantId that revokeByGrantId must reach.
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

// Opaque credentials issued, by client, kept after they expire or are revoked: the e2e leak scan
// searches for every one the plugin ever held (GET /test/secrets). Opaque values are their ids.
const ISSUED = new Set(['AccessToken', 'AuthorizationCode', 'DeviceCode', 'RefreshToken']);
const issued = new Map(); // clientId -> Model -> Set of ids

const uidIndex = new Map(); // Session uid -> id
const userCodeIndex = new Map(); // DeviceCode userCode -> id

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

function sweep() {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) store.delete(key);
  }
  for (const [grantId, members] of grantMembers) {
    for (const key of members) if (!store.has(key)) members.delete(key);
    if (members.size === 0) grantMembers.delete(grantId);
  }
}

// unref: the sweep must never keep the process alive on its own.
setInterval(sweep, 60_000).unref();

// Every credential of the ISSUED models ever stored for a client: { Model: [id, ...] }.
export function issuedTo(clientId) {
  const out = {};
  for (const [model, ids] of issued.get(clientId) || []) out[model] = [...ids];
  return out;
}

// The live payloads of one model, for the test endpoints.
export function* livePayloads(model) {
  const prefix = `${model}:`;
  for (const key of store.keys()) {
    if (key.startsWith(prefix)) {
      const payload = live(key);
      if (payload) yield payload;
    }
  }
}

export default class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });

    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (ISSUED.has(this.model) && payload.clientId) {
      if (!issued.has(payload.clientId)) issued.set(payload.clientId, new Map());
      const byModel = issued.get(payload.clientId);
      if (!byModel.has(this.model)) byModel.set(this.model, new Set());
      byModel.get(this.model).add(id);
    }
    if (this.model === 'Session' && payload.uid) uidIndex.set(payload.uid, id);
    if (payload.userCode) userCodeIndex.set(payload.userCode, id);
  }

  async find(id) {
    return live(this.key(id));
  }

  async findByUid(uid) {
    const id = uidIndex.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodeIndex.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  // Only this model's entries: oidc-provider calls this once per model it means to revoke (see
  // its helpers/revoke.js), e.g. AccessToken alone when an access token is revoked by a client
  // that may not use refresh tokens.
  async revokeByGrantId(grantId) {
    const members = grantMembers.get(grantId);
    if (!members) return;
    const prefix = `${this.model}:`;
    for (const key of members) {
      if (key.startsWith(prefix)) {
        store.delete(key);
        members.delete(key);
      }
    }
    if (members.size === 0) grantMembers.delete(grantId);
  }
}
