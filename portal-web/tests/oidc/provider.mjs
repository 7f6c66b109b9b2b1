// A standard OpenID provider for the portal's tests: the npm package
// `oidc-provider` (not written by this project), configured with one
// client and a login form of ours (its interaction API), started by the
// test harness:
//   PORT=… REDIRECT_URI=… CLIENT_ID=… CLIENT_SECRET=… ACR=… node provider.mjs
// The login form asks for a personal id; the ID token carries it in the
// `personal_id` claim with the acr given in ACR. With ROLES (JSON: account
// -> role) the ID token also carries `lienthong_registry_role`, as an
// organisation's provider asserts an officer's role.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const acr = process.env.ACR || 'substantial';
const roles = JSON.parse(process.env.ROLES || '{}');

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  acrValues: ['low', 'substantial', 'high'],
  claims: { openid: ['sub', 'personal_id', 'lienthong_registry_role'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  cookies: { keys: ['lienthong-test-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const role = Object.hasOwn(roles, id) ? { lienthong_registry_role: roles[id] } : {};
    return { accountId: id, async claims() { return { sub: id, personal_id: id, ...role }; } };
  },
});

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    if (action === 'login' && req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const login = new URLSearchParams(body).get('login') || '';
      return provider.interactionFinished(req, res, { login: { accountId: login, acr } },
        { mergeWithLastSubmission: false });
    }
    res.setHeader('content-type', 'text/html; charset=utf-8');
    return res.end(`<!doctype html><html lang="en"><title>Test provider sign-in</title>
<h1>Test OpenID provider (oidc-provider)</h1>
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Personal ID</label> <input id="login" name="login" autofocus>
<button type="submit" id="submit">Sign in</button></form></html>`);
  }
  // Consent: granted for what the client asked.
  const { prompt: { details: d }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } },
    { mergeWithLastSubmission: true });
}

const callback = provider.callback();
http.createServer(async (req, res) => {
  const m = req.url.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
  if (!m) return callback(req, res);
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (e) {
    res.statusCode = 400;
    res.end(`interaction failed: ${escape(e.message)}`);
  }
}).listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
