// A certified OpenID Provider (oidc-provider 9.x) for the single sign-on tests, on 127.0.0.1 only.
// Configuration comes from the environment:
//   OIDC_TEST_PORT     port to listen on (0 or unset: any free port)
//   OIDC_TEST_CLIENTS  JSON list of clients ({client_id, client_secret, redirect_uris, post_logout_redirect_uris})
//   OIDC_TEST_ACCOUNTS JSON object: login name -> {groups: [...], email, name}; an unknown login has no groups
// devInteractions serves the login form (any password) and the consent form. The listening address is
// printed as one JSON line on stdout: {"issuer": "http://127.0.0.1:<port>"}.
import http from 'node:http';
import Provider from 'oidc-provider';

const clients = JSON.parse(process.env.OIDC_TEST_CLIENTS || '[]');
const accounts = JSON.parse(process.env.OIDC_TEST_ACCOUNTS || '{}');

const server = http.createServer();
server.listen(Number(process.env.OIDC_TEST_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...c,
    })),
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    // Scope claims in the ID token itself, as providers such as Keycloak and Dex do.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    cookies: { keys: ['test-provider-cookie-key-not-secret'] },
    async findAccount(ctx, id) {
      const account = accounts[id] || {};
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: id,
            name: account.name || id,
            email: account.email || `${id}@example.com`,
            email_verified: true,
            groups: account.groups || [],
          };
        },
      };
    },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
