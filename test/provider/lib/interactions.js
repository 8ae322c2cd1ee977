// End-user interactions for the authorization code and device flows: a sign-in page checked
// against PROVIDER_USERS and a consent page with Allow and Deny, plain HTML forms over HTTP with
// no scripts and no external resources, so that a scripted client (cookie jar, redirects, form
// posts) and a real browser both get through. Also the device flow's user-code pages, in the same
// style. oidc-provider's devInteractions would sign anyone in with any password.
//
//   GET  /interaction/:uid          the current prompt: sign-in or consent
//   POST /interaction/:uid/login    username, password
//   POST /interaction/:uid/consent  grants what the client asked for
//   POST /interaction/:uid/abort    denies: the client gets error=access_denied

import htmlSafe from 'oidc-provider/lib/helpers/html_safe.js';

import { readForm } from './testing.js';

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent|abort))?$/;

// One small page. Without a status the page keeps the one already set (200 once a body is set,
// or an error's from oidc-provider's error handler). No form-action in the policy: browsers apply
// it to the redirects after a submission too, and consent ends in a redirect to the client.
function page(ctx, title, body, status) {
  if (status !== undefined) ctx.status = status;
  ctx.type = 'html';
  ctx.set('cache-control', 'no-store');
  ctx.set('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  ctx.body = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${htmlSafe(title)}</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}input,button{display:block;margin:.5em 0;font-size:1em}</style>
</head>
<body>
<h1>${htmlSafe(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(ctx, uid, client, message, status) {
  const note = message ? `<p class="error">${htmlSafe(message)}</p>` : '';
  page(ctx, 'Sign in', `<p>to continue to <strong>${htmlSafe(client)}</strong></p>
${note}<form id="login" method="post" action="/interaction/${htmlSafe(uid)}/login">
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit" name="submit" value="login">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${htmlSafe(uid)}/abort"><button type="submit">Cancel</button></form>`, status);
}

function consentPage(ctx, uid, client, accountId, scopes) {
  const items = scopes.map((s) => `<li>${htmlSafe(s)}</li>`).join('');
  page(ctx, 'Authorize', `<p>Signed in as <strong>${htmlSafe(accountId)}</strong>.</p>
<p><strong>${htmlSafe(client)}</strong> asks for:</p>
<ul id="scopes">${items}</ul>
<form id="consent" method="post" action="/interaction/${htmlSafe(uid)}/consent"><button type="submit" name="submit" value="allow">Allow</button></form>
<form id="abort" method="post" action="/interaction/${htmlSafe(uid)}/abort"><button type="submit" name="submit" value="deny">Deny</button></form>`);
}

// What the consent prompt is missing, granted as it stands (as devInteractions does).
async function grantConsent(provider, details) {
  const { prompt: { details: missing }, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  return grant.save();
}

// Koa middleware answering the /interaction/ routes in front of oidc-provider.
export function createInteractions(provider, { users }) {
  async function finish(ctx, result, merge) {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
    ctx.status = 303;
    ctx.redirect(returnTo);
  }

  async function handle(ctx, uid, action) {
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch {
      // No interaction cookie for this browser, or the interaction expired.
      page(ctx, 'Session expired', '<p>This sign-in request is unknown or has expired. Start again.</p>', 400);
      return;
    }
    if (details.uid !== uid) {
      page(ctx, 'Session expired', '<p>This sign-in request does not match the browser session. Start again.</p>', 400);
      return;
    }
    const client = await provider.Client.find(details.params.client_id);
    const clientName = client?.clientName || details.params.client_id;
    const prompt = details.prompt.name;

    if (ctx.method === 'GET' && !action) {
      if (prompt === 'login') {
        loginPage(ctx, uid, clientName);
      } else if (prompt === 'consent') {
        consentPage(ctx, uid, clientName, details.session?.accountId, String(details.params.scope || '').split(' ').filter(Boolean));
      } else {
        page(ctx, 'Not supported', `<p>Prompt ${htmlSafe(prompt)} is not supported here.</p>`, 501);
      }
      return;
    }
    if (ctx.method !== 'POST' || !action) {
      page(ctx, 'Not found', '<p>No such page.</p>', 404);
      return;
    }

    const form = await readForm(ctx);
    switch (action) {
      case 'login': {
        if (prompt !== 'login') break;
        const username = typeof form.username === 'string' ? form.username : '';
        const password = typeof form.password === 'string' ? form.password : '';
        if (!users.has(username) || users.get(username) !== password) {
          loginPage(ctx, uid, clientName, 'Wrong username or password.', 401);
          return;
        }
        await finish(ctx, { login: { accountId: username } }, false);
        return;
      }
      case 'consent': {
        if (prompt !== 'consent') break;
        await finish(ctx, { consent: { grantId: await grantConsent(provider, details) } }, true);
        return;
      }
      case 'abort':
        await finish(ctx, { error: 'access_denied', error_description: 'End-User denied the request' }, false);
        return;
      default:
    }
    page(ctx, 'Out of step', `<p>This request is at the ${htmlSafe(prompt)} step. Go back and reload.</p>`, 400);
  }

  return async function interactions(ctx, next) {
    const m = INTERACTION.exec(ctx.path);
    if (!m) return next();
    await handle(ctx, m[1], m[2]);
    return undefined;
  };
}

// The device flow's pages (features.deviceFlow sources), without oidc-provider's external fonts.
export const deviceFlowPages = {
  async userCodeInputSource(ctx, form, out, err) {
    let message = 'Enter the code shown on your device.';
    if (err && (err.userCode || err.name === 'NoCodeError')) message = 'The code you entered is incorrect. Try again.';
    else if (err && err.name === 'AbortedError') message = 'The sign-in request was denied.';
    else if (err) message = 'There was an error processing your request.';
    page(ctx, 'Device sign-in', `<p id="message">${htmlSafe(message)}</p>
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
  },
  async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
    page(ctx, 'Confirm device', `<p><strong>${htmlSafe(client.clientName || client.clientId)}</strong> on a device showing</p>
<p><code id="user_code">${htmlSafe(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
  },
  async successSource(ctx) {
    page(ctx, 'Device connected', '<p>The device is signed in. You can close this page.</p>');
  },
};
