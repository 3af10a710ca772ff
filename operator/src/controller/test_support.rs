//! Fixtures for unit tests: instances parsed from YAML. Test-only.

use crate::controller::validate::{ValidInstance, validate};
use crate::crd::TmiInstance;

/// Minimal instance: external PostgreSQL, no cache.
pub const EXTERNAL: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 1 }
spec:
  version: 1.2.3
  database: { external: { urlSecretRef: { name: acme-db, key: url } } }
"#;

/// Everything set: Redis host, providers, administrator, dev login, three replicas.
pub const FULL: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 7 }
spec:
  version: 1.2.3
  buildMode: Development
  hostname: tmi.example.com
  server:
    replicas: 3
    env: [{ name: TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST, value: "http://localhost:8079/" }]
    probes: { startup: { failureThreshold: 300 } }
  database: { external: { urlSecretRef: { name: acme-db, key: url } } }
  cache: { external: { host: redis.cache.svc, port: 6380, db: 2, passwordSecretRef: { name: acme-redis, key: password } } }
  auth:
    devLogin: true
    providers:
      - id: azure-ad
        name: Entra ID
        clientIdSecretRef: { name: acme-oauth, key: entra-id }
        clientSecretSecretRef: { name: acme-oauth, key: entra-secret }
        authorizationUrl: https://login.example.com/authorize
        tokenUrl: https://login.example.com/token
        issuer: https://login.example.com/
        jwksUrl: https://login.example.com/keys
        scopes: [openid, email]
      - id: github
        clientIdSecretRef: { name: acme-oauth, key: github-id }
        clientSecretSecretRef: { name: acme-oauth, key: github-secret }
        authorizationUrl: https://github.com/login/oauth/authorize
        tokenUrl: https://github.com/login/oauth/access_token
        userinfoUrl: https://api.github.com/user
        subjectClaim: id
    administrators: [{ provider: github, subject: "4242" }]
"#;

/// SQLite on a PVC.
pub const SQLITE: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: notes, namespace: tenant, uid: 00000000-0000-0000-0000-000000000002, generation: 1 }
spec:
  version: 1.2.3
  database: { sqlite: { size: 2Gi } }
"#;

/// Exposed through an ingress-nginx Ingress with a cert-manager certificate; two replicas.
pub const INGRESS: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 4 }
spec:
  version: 1.2.3
  hostname: tmi.example.com
  server: { replicas: 2 }
  database: { external: { urlSecretRef: { name: acme-db, key: url } } }
  cache: { external: { urlSecretRef: { name: acme-redis, key: url } } }
  exposure:
    type: Ingress
    ingress: { className: public, annotations: { nginx.ingress.kubernetes.io/proxy-body-size: 64m, example.com/team: a } }
    tls: { issuerRef: { name: letsencrypt, kind: ClusterIssuer } }
"#;

/// Exposed through a Gateway API HTTPRoute with an existing TLS Secret; one replica.
pub const GATEWAY: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 2 }
spec:
  version: 1.2.3
  hostname: tmi.example.com
  database: { external: { urlSecretRef: { name: acme-db, key: url } } }
  exposure:
    type: Gateway
    gateway: { parentRefs: [{ name: public, namespace: gateways, sectionName: https }, { name: internal }] }
    tls: { secretName: tmi-cert }
"#;

/// Sign-in as a user configures it: GitHub (plain OAuth 2.0, two userinfo endpoints) and Keycloak (OpenID
/// Connect through discovery, groups, behind a private CA from a ConfigMap); an administrators group.
pub const SIGN_IN: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 5 }
spec:
  version: 1.2.3
  hostname: tmi.example.com
  database: { external: { urlSecretRef: { name: acme-db, key: url } } }
  exposure:
    type: Ingress
    tls: { secretName: tmi-tls }
  auth:
    trustedCA: { configMapKeyRef: { name: corp-ca, key: ca.pem } }
    providers:
      - id: github
        name: GitHub
        icon: fa-brands fa-github
        clientIdSecretRef: { name: acme-oauth, key: github-id }
        clientSecretSecretRef: { name: acme-oauth, key: github-secret }
        authorizationUrl: https://github.com/login/oauth/authorize
        tokenUrl: https://github.com/login/oauth/access_token
        scopes: [read:user, user:email]
        userinfo:
          - url: https://api.github.com/user
            claims: { subject: id, name: name, picture: avatar_url }
          - url: https://api.github.com/user/emails
            claims: { email: "[0].email", emailVerified: "[0].verified" }
        additionalParams: { allow_signup: "false" }
        authHeaderFormat: token %s
        acceptHeader: application/vnd.github+json
      - id: keycloak
        name: Corporate SSO
        clientIdSecretRef: { name: acme-oauth, key: keycloak-id }
        clientSecretSecretRef: { name: acme-oauth, key: keycloak-secret }
        issuer: https://sso.example.com/realms/tmi
        scopes: [openid, profile, email]
        userinfo:
          - url: https://sso.example.com/realms/tmi/protocol/openid-connect/userinfo
            claims: { groups: groups, givenName: given_name, familyName: family_name }
        additionalParams: { prompt: login }
    administrators: [{ provider: keycloak, group: tmi-admins }]
"#;

/// Parses a `TmiInstance` from YAML.
pub fn instance_from_yaml(yaml: &str) -> TmiInstance {
    serde_yaml::from_str(yaml).expect("fixture parses")
}

/// Parses and validates a `TmiInstance` from YAML.
pub fn valid_from_yaml(yaml: &str) -> ValidInstance {
    validate(&instance_from_yaml(yaml)).expect("fixture is valid")
}
