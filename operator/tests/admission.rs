//! Bad input is rejected at admission by the CRD's schema and CEL rules, with a message naming the field.
//! Runs against the real API server of the local control plane.

mod common;

use common::*;

/// A valid base spec; each case replaces or adds to it.
fn base(name: &str, spec: &str) -> String {
    format!("apiVersion: tmi.dev/v1alpha1\nkind: TmiInstance\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

const DB: &str = "  database: { external: { urlSecretRef: { name: db, key: url } } }\n";
const REDIS: &str = "  cache: { external: { urlSecretRef: { name: redis, key: url } } }\n";
const HOST: &str = "  hostname: tmi.example.com\n";

/// The userinfo part of a valid plain OAuth 2.0 provider (for `provider`).
const PLAIN: &str = "userinfoUrl: https://a.example/user, subjectClaim: id";

/// A provider without issuer: a plain OAuth 2.0 one with `fields` added.
fn provider(fields: &str) -> String {
    format!(
        "  buildMode: Test\n  auth:\n    providers:\n      - {{ id: google, clientIdSecretRef: {{ name: o, key: id }}, clientSecretSecretRef: {{ name: o, key: s }}, authorizationUrl: https://a.example/auth, tokenUrl: https://a.example/token, {fields} }}\n"
    )
}

/// An OpenID Connect provider: only the client, and `fields`.
fn oidc(fields: &str) -> String {
    format!(
        "  auth:\n    providers:\n      - {{ id: sso, clientIdSecretRef: {{ name: o, key: id }}, clientSecretSecretRef: {{ name: o, key: s }}, {fields} }}\n"
    )
}

/// (case, spec, text the error must contain: the field it names)
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let v = "  version: 1.0.0\n";
    vec![
        ("no database", v.to_string(), "spec.database"),
        (
            "both databases",
            format!(
                "{v}  database: {{ external: {{ urlSecretRef: {{ name: db, key: url }} }}, sqlite: {{ size: 1Gi }} }}\n"
            ),
            "spec.database",
        ),
        (
            "neither database",
            format!("{v}  database: {{}}\n"),
            "spec.database",
        ),
        (
            "sqlite with 2 replicas",
            format!("{v}  database: {{ sqlite: {{ size: 1Gi }} }}\n{REDIS}  server: {{ replicas: 2 }}\n"),
            "spec.server.replicas",
        ),
        (
            "replicas > 1 without a cache",
            format!("{v}{DB}  server: {{ replicas: 3 }}\n"),
            "spec.server.replicas",
        ),
        (
            "negative replicas",
            format!("{v}{DB}  server: {{ replicas: -1 }}\n"),
            "spec.server.replicas",
        ),
        (
            "absurd replicas",
            format!("{v}{DB}{REDIS}  server: {{ replicas: 100000 }}\n"),
            "spec.server.replicas",
        ),
        (
            "negative sqlite size",
            format!("{v}  database: {{ sqlite: {{ size: -1Gi }} }}\n"),
            "spec.database.sqlite.size",
        ),
        (
            "absurd sqlite size",
            format!("{v}  database: {{ sqlite: {{ size: 900Pi }} }}\n"),
            "spec.database.sqlite.size",
        ),
        (
            "sqlite size not a quantity",
            format!("{v}  database: {{ sqlite: {{ size: lots }} }}\n"),
            "spec.database.sqlite.size",
        ),
        (
            "negative memory request",
            format!("{v}{DB}  server: {{ resources: {{ requests: {{ memory: -128Mi }} }} }}\n"),
            "spec.server.resources.requests",
        ),
        (
            "absurd cpu limit",
            format!("{v}{DB}  server: {{ resources: {{ limits: {{ cpu: 5000P }} }} }}\n"),
            "spec.server.resources.limits",
        ),
        ("empty cache", format!("{v}{DB}  cache: {{}}\n"), "spec.cache"),
        (
            "cache url and host",
            format!(
                "{v}{DB}  cache: {{ external: {{ urlSecretRef: {{ name: r, key: u }}, host: redis }} }}\n"
            ),
            "spec.cache.external",
        ),
        (
            "cache neither url nor host",
            format!("{v}{DB}  cache: {{ external: {{}} }}\n"),
            "spec.cache.external",
        ),
        (
            "cache port with url",
            format!(
                "{v}{DB}  cache: {{ external: {{ urlSecretRef: {{ name: r, key: u }}, port: 6380 }} }}\n"
            ),
            "spec.cache.external.port",
        ),
        (
            "cache port out of range",
            format!("{v}{DB}  cache: {{ external: {{ host: redis, port: 70000 }} }}\n"),
            "spec.cache.external.port",
        ),
        (
            "hostname with underscore",
            format!("{v}{DB}  hostname: tmi_example.com\n"),
            "spec.hostname",
        ),
        (
            "hostname with scheme",
            format!("{v}{DB}  hostname: https://tmi.example.com\n"),
            "spec.hostname",
        ),
        (
            "hostname upper case",
            format!("{v}{DB}  hostname: TMI.example.com\n"),
            "spec.hostname",
        ),
        (
            "version not a release",
            format!("  version: latest\n{DB}"),
            "spec.version",
        ),
        (
            "image with whitespace",
            format!("{v}{DB}  image: \"ghcr.io/x/y:1 2\"\n"),
            "spec.image",
        ),
        (
            "unknown field",
            format!("{v}{DB}  replicas: 2\n"),
            "spec.replicas",
        ),
        (
            "unknown nested field",
            format!("{v}{DB}  server: {{ replica: 2 }}\n"),
            "spec.server.replica",
        ),
        (
            "unknown build mode",
            format!("{v}{DB}  buildMode: Staging\n"),
            "spec.buildMode",
        ),
        (
            "dev login in production",
            format!("{v}{DB}  auth: {{ devLogin: true }}\n"),
            "spec.auth.devLogin",
        ),
        (
            "provider id reserved",
            format!("{v}{DB}{}", provider(PLAIN).replace("id: google", "id: tmi")),
            "spec.auth.providers[].id",
        ),
        (
            "provider id upper case",
            format!("{v}{DB}{}", provider(PLAIN).replace("id: google", "id: Google")),
            "spec.auth.providers[].id",
        ),
        (
            "plain provider without authorizationUrl",
            format!(
                "{v}{DB}{}",
                provider(PLAIN).replace("authorizationUrl: https://a.example/auth, ", "")
            ),
            "spec.auth.providers[].authorizationUrl is required",
        ),
        (
            "plain provider without tokenUrl",
            format!(
                "{v}{DB}{}",
                provider(PLAIN).replace("tokenUrl: https://a.example/token, ", "")
            ),
            "spec.auth.providers[].tokenUrl is required",
        ),
        (
            "plain provider without userinfo",
            format!("{v}{DB}{}", provider("scopes: [read]")),
            "spec.auth.providers[].userinfoUrl (or userinfo) is required",
        ),
        (
            "plain provider without a subject claim",
            format!(
                "{v}{DB}{}",
                provider("userinfo: [{ url: https://a.example/user, claims: { email: email } }]")
            ),
            "spec.auth.providers[].subjectClaim (or userinfo[].claims.subject) is required",
        ),
        (
            "issuer not https",
            format!("{v}{DB}{}", oidc("issuer: http://sso.example/realms/tmi")),
            "spec.auth.providers[].issuer must be an https URL",
        ),
        (
            "jwksUrl not https",
            format!(
                "{v}{DB}{}",
                oidc("issuer: https://sso.example/r, jwksUrl: http://sso.example/keys")
            ),
            "spec.auth.providers[].jwksUrl must be an https URL",
        ),
        (
            "authorizationUrl plain http",
            format!(
                "{v}{DB}{}",
                provider(PLAIN).replace("https://a.example/auth", "http://a.example/auth")
            ),
            "spec.auth.providers[].authorizationUrl must be an https URL",
        ),
        (
            "userinfoUrl plain http",
            format!(
                "{v}{DB}{}",
                provider(PLAIN).replace("https://a.example/user", "http://a.example/user")
            ),
            "spec.auth.providers[].userinfoUrl must be an https URL",
        ),
        (
            "userinfo url plain http",
            format!(
                "{v}{DB}{}",
                provider("userinfo: [{ url: http://a.example/user, claims: { subject: id } }]")
            ),
            "spec.auth.providers[].userinfo[].url must be an https URL",
        ),
        (
            "oidc scopes without openid",
            format!(
                "{v}{DB}{}",
                oidc("issuer: https://sso.example/r, scopes: [email, profile]")
            ),
            "spec.auth.providers[].scopes must include openid",
        ),
        (
            "scope with a comma",
            format!(
                "{v}{DB}{}",
                provider(&format!("{PLAIN}, scopes: [\"read,write\"]"))
            ),
            "spec.auth.providers[].scopes must be OAuth scope tokens",
        ),
        (
            "shorthand and userinfo together",
            format!(
                "{v}{DB}{}",
                provider(&format!(
                    "{PLAIN}, userinfo: [{{ url: https://a.example/u2, claims: {{ subject: id }} }}]"
                ))
            ),
            "spec.auth.providers[].userinfo cannot be combined",
        ),
        (
            "shorthand claim without userinfoUrl",
            format!(
                "{v}{DB}{}",
                oidc("issuer: https://sso.example/r, emailClaim: mail")
            ),
            "map the answer of userinfoUrl, which they require",
        ),
        (
            "four userinfo endpoints",
            format!(
                "{v}{DB}{}",
                oidc(
                    "issuer: https://sso.example/r, userinfo: [{ url: https://a.example/1 }, { url: https://a.example/2 }, { url: https://a.example/3 }, { url: https://a.example/4 }]"
                )
            ),
            "spec.auth.providers[0].userinfo",
        ),
        (
            "unknown claim kind",
            format!(
                "{v}{DB}{}",
                provider("userinfo: [{ url: https://a.example/user, claims: { subject: id, sub: id } }]")
            ),
            "spec.auth.providers[0].userinfo[0].claims.sub",
        ),
        (
            "reserved additional parameter",
            format!(
                "{v}{DB}{}",
                oidc(
                    "issuer: https://sso.example/r, additionalParams: { redirect_uri: \"https://evil.example/\" }"
                )
            ),
            "spec.auth.providers[].additionalParams cannot set",
        ),
        (
            "additional parameter not a name",
            format!(
                "{v}{DB}{}",
                oidc("issuer: https://sso.example/r, additionalParams: { Access-Type: offline }")
            ),
            "spec.auth.providers[].additionalParams keys must be",
        ),
        (
            "authHeaderFormat with two %s",
            format!(
                "{v}{DB}{}",
                provider(&format!("{PLAIN}, authHeaderFormat: \"%s %s\""))
            ),
            "spec.auth.providers[].authHeaderFormat must contain exactly one %s",
        ),
        (
            "authHeaderFormat without %s",
            format!(
                "{v}{DB}{}",
                provider(&format!("{PLAIN}, authHeaderFormat: token"))
            ),
            "spec.auth.providers[].authHeaderFormat must contain exactly one %s",
        ),
        (
            "acceptHeader with a line break",
            format!(
                "{v}{DB}{}",
                provider(&format!("{PLAIN}, acceptHeader: \"a\\r\\nX: 1\""))
            ),
            "spec.auth.providers[].acceptHeader must not contain line breaks",
        ),
        (
            "client secret inline",
            format!(
                "{v}{DB}{}",
                oidc("issuer: https://sso.example/r, clientSecret: hunter2")
            ),
            "spec.auth.providers[0].clientSecret",
        ),
        (
            "trustedCA from both",
            format!(
                "{v}{DB}  auth: {{ trustedCA: {{ configMapKeyRef: {{ name: ca, key: ca.crt }}, secretKeyRef: {{ name: ca, key: ca.crt }} }} }}\n"
            ),
            "spec.auth.trustedCA needs exactly one of configMapKeyRef or secretKeyRef",
        ),
        (
            "trustedCA from neither",
            format!("{v}{DB}  auth: {{ trustedCA: {{}} }}\n"),
            "spec.auth.trustedCA needs exactly one of configMapKeyRef or secretKeyRef",
        ),
        (
            "trustedCA configmap name invalid",
            format!(
                "{v}{DB}  auth: {{ trustedCA: {{ configMapKeyRef: {{ name: Corp_CA, key: ca.crt }} }} }}\n"
            ),
            "spec.auth.trustedCA.configMapKeyRef.name",
        ),
        (
            "provider url not http",
            format!(
                "{v}{DB}{}",
                provider(PLAIN).replace("https://a.example/token", "ftp://a.example/token")
            ),
            "spec.auth.providers[].tokenUrl",
        ),
        (
            "duplicate provider ids",
            format!(
                "{v}{DB}{}      - {{ id: google, clientIdSecretRef: {{ name: o, key: id }}, clientSecretSecretRef: {{ name: o, key: s }}, authorizationUrl: https://b.example/a, tokenUrl: https://b.example/t, userinfoUrl: https://b.example/u, subjectClaim: id }}\n",
                provider(PLAIN)
            ),
            "spec.auth.providers[].id must be unique",
        ),
        (
            "admin with unknown provider",
            format!("{v}{DB}  auth: {{ administrators: [{{ provider: google, subject: \"1\" }}] }}\n"),
            "spec.auth.administrators",
        ),
        (
            "admin without subject",
            format!(
                "{v}{DB}{}    administrators: [{{ provider: google }}]\n",
                provider(PLAIN)
            ),
            "spec.auth.administrators[]",
        ),
        (
            "two admins",
            format!(
                "{v}{DB}{}    administrators: [{{ provider: google, subject: \"1\" }}, {{ provider: google, subject: \"2\" }}]\n",
                provider(PLAIN)
            ),
            "spec.auth.administrators",
        ),
        (
            "bad secret key",
            format!("{v}  database: {{ external: {{ urlSecretRef: {{ name: db, key: \"a/b\" }} }} }}\n"),
            "spec.database.external.urlSecretRef.key",
        ),
        (
            "bad secret name",
            format!("{v}  database: {{ external: {{ urlSecretRef: {{ name: Db, key: url }} }} }}\n"),
            "spec.database.external.urlSecretRef.name",
        ),
        (
            "probe period zero",
            format!("{v}{DB}  server: {{ probes: {{ liveness: {{ periodSeconds: 0 }} }} }}\n"),
            "spec.server.probes.liveness.periodSeconds",
        ),
        (
            "exposure without hostname",
            format!("{v}{DB}  exposure: {{ type: Ingress }}\n"),
            "spec.exposure.type",
        ),
        (
            "gateway without parentRefs",
            format!("{v}{DB}{HOST}  exposure: {{ type: Gateway }}\n"),
            "spec.exposure.gateway",
        ),
        (
            "ingress settings on a gateway",
            format!(
                "{v}{DB}{HOST}  exposure: {{ type: Gateway, gateway: {{ parentRefs: [{{ name: gw }}] }}, ingress: {{ className: nginx }} }}\n"
            ),
            "spec.exposure.ingress",
        ),
        (
            "tls without exposure",
            format!("{v}{DB}{HOST}  exposure: {{ type: None, tls: {{ secretName: tls }} }}\n"),
            "spec.exposure.tls",
        ),
        (
            "tls from both an issuer and a secret",
            format!(
                "{v}{DB}{HOST}  exposure: {{ type: Ingress, tls: {{ secretName: tls, issuerRef: {{ name: ca, kind: ClusterIssuer }} }} }}\n"
            ),
            "spec.exposure.tls",
        ),
        (
            "snippet annotation",
            format!(
                "{v}{DB}{HOST}  exposure: {{ type: Ingress, ingress: {{ annotations: {{ nginx.ingress.kubernetes.io/configuration-snippet: \"return 200;\" }} }} }}\n"
            ),
            "spec.exposure.ingress.annotations",
        ),
        (
            "tls secret on ALB",
            format!(
                "{v}{DB}{HOST}  exposure: {{ type: Ingress, ingress: {{ controller: ALB }}, tls: {{ secretName: tls }} }}\n"
            ),
            "spec.exposure.tls",
        ),
        (
            "idle timeout too short",
            format!("{v}{DB}{HOST}  exposure: {{ type: Ingress, websocketIdleTimeoutSeconds: 5 }}\n"),
            "spec.exposure.websocketIdleTimeoutSeconds",
        ),
        (
            "unknown controller preset",
            format!("{v}{DB}{HOST}  exposure: {{ type: Ingress, ingress: {{ controller: envoy }} }}\n"),
            "spec.exposure.ingress.controller",
        ),
    ]
}

async fn kubectl_create(namespace: &str, yaml: String) -> std::process::Output {
    let namespace = namespace.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = tmi_e2e::shared()
            .kubectl()
            .args(["create", "--validate=strict", "-n", &namespace, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write");
        child.wait_with_output().expect("kubectl finishes")
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn invalid_specs_are_rejected_naming_the_field() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-admit").await;
    install_crd(&ns.client).await;
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 20);
    for (n, (case, spec, field)) in cases.iter().enumerate() {
        let yaml = base(&format!("bad-{n}"), spec);
        // `kubectl create` as a user would: strict field validation, so unknown fields are errors too.
        let out = kubectl_create(&ns.name, yaml).await;
        if out.status.success() {
            failures.push(format!("{case}: accepted"));
            continue;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.contains(field) {
            failures.push(format!("{case}: message does not name {field:?}: {stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn valid_specs_are_accepted() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-admit-ok").await;
    install_crd(&ns.client).await;
    let specs = [
        format!("  version: 1.0.0\n{DB}"),
        "  version: v2.3.4-rc.1\n  database: { sqlite: { size: 1Gi } }\n".to_string(),
        format!("  version: 1.0.0\n{DB}{REDIS}  server: {{ replicas: 3 }}\n  hostname: tmi.example.com\n"),
        format!(
            "  version: 1.0.0\n{DB}{}    devLogin: true\n    administrators: [{{ provider: tmi, subject: alice }}]\n",
            provider(PLAIN)
        ),
        format!(
            "  version: 1.0.0\n{DB}  cache: {{ external: {{ host: redis.example, port: 6380, db: 3, passwordSecretRef: {{ name: r, key: p }} }} }}\n  server: {{ resources: {{ requests: {{ cpu: 100m, memory: 128Mi }}, limits: {{ memory: 1Gi }} }} }}\n"
        ),
        format!(
            "  version: 1.0.0\n{DB}{HOST}  exposure: {{ type: Ingress, ingress: {{ className: nginx, controller: Nginx, annotations: {{ a.example/b: c }} }}, tls: {{ issuerRef: {{ name: letsencrypt, kind: ClusterIssuer }} }}, sessionAffinity: Cookie, websocketIdleTimeoutSeconds: 7200 }}\n"
        ),
        format!(
            "  version: 1.0.0\n{DB}{HOST}  exposure: {{ type: Gateway, gateway: {{ parentRefs: [{{ name: public, namespace: gateways, sectionName: https }}] }}, tls: {{ secretName: tmi-tls }} }}\n"
        ),
        format!("  version: 1.0.0\n{DB}  exposure: {{ type: None }}\n"),
        // An OpenID Connect provider needs nothing but its issuer and client.
        format!(
            "  version: 1.0.0\n{DB}{}",
            oidc("issuer: https://sso.example/realms/tmi")
        ),
        // Every provider field: GitHub (plain OAuth 2.0, two userinfo endpoints), Keycloak with groups, a
        // private CA from a ConfigMap, administrators by group.
        format!(
            "  version: 1.0.0\n{DB}  auth:\n    trustedCA: {{ configMapKeyRef: {{ name: corp-ca, key: ca.crt }} }}\n    providers:\n{}{}    administrators: [{{ provider: keycloak, group: tmi-admins }}]\n",
            "      - { id: github, name: GitHub, icon: fa-brands fa-github, clientIdSecretRef: { name: o, key: id }, clientSecretSecretRef: { name: o, key: s }, authorizationUrl: https://github.com/login/oauth/authorize, tokenUrl: https://github.com/login/oauth/access_token, scopes: [\"read:user\", \"user:email\"], userinfo: [{ url: https://api.github.com/user, claims: { subject: id, name: name, picture: avatar_url } }, { url: https://api.github.com/user/emails, claims: { email: \"[0].email\", emailVerified: \"[0].verified\" } }], additionalParams: { allow_signup: \"false\" }, authHeaderFormat: \"token %s\", acceptHeader: application/vnd.github+json }\n",
            "      - { id: keycloak, clientIdSecretRef: { name: o, key: kid }, clientSecretSecretRef: { name: o, key: ks }, issuer: https://sso.example/realms/tmi, jwksUrl: https://sso.example/realms/tmi/protocol/openid-connect/certs, scopes: [openid, email], userinfo: [{ url: https://sso.example/realms/tmi/protocol/openid-connect/userinfo, claims: { groups: groups, givenName: given_name, familyName: family_name } }], additionalParams: { prompt: login, access_type: offline } }\n",
        ),
        // The shorthand for the primary userinfo endpoint; a private CA from a Secret.
        format!(
            "  version: 1.0.0\n{DB}{}    trustedCA: {{ secretKeyRef: {{ name: idp-ca, key: ca.crt }} }}\n",
            provider(&format!("{PLAIN}, emailClaim: email, nameClaim: login"))
        ),
    ];
    for (n, spec) in specs.iter().enumerate() {
        let yaml = base(&format!("good-{n}"), spec);
        if let Err(e) = apply_instance(&ns.client, &ns.name, &yaml).await {
            panic!("valid spec {n} rejected: {e}\n{yaml}");
        }
    }
    // The shipped single-instance samples are admitted as written (each replaces the previous `tmi`).
    for sample in ["production.yaml", "production-exposed.yaml", "keycloak.yaml"] {
        let yaml = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/samples")
                .join(sample),
        )
        .unwrap();
        if let Err(e) = apply_instance(&ns.client, &ns.name, &yaml).await {
            panic!("config/samples/{sample} rejected: {e}");
        }
    }
    // Every `spec:` snippet of docs/sign-in.md is admitted (on a minimal instance).
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sign-in.md"))
            .unwrap();
    let snippets: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("spec:"))
        .collect();
    assert!(snippets.len() >= 8, "{}", snippets.len());
    for (n, snippet) in snippets.into_iter().enumerate() {
        let mut instance: serde_yaml::Value = serde_yaml::from_str(&base(
            &format!("doc-{n}"),
            &format!("  version: 1.0.0\n{DB}{HOST}"),
        ))
        .unwrap();
        let snippet: serde_yaml::Value = serde_yaml::from_str(snippet).unwrap();
        for (k, v) in snippet["spec"].as_mapping().unwrap() {
            instance["spec"][k.as_str().unwrap()] = v.clone();
        }
        let yaml = serde_yaml::to_string(&instance).unwrap();
        if let Err(e) = apply_instance(&ns.client, &ns.name, &yaml).await {
            panic!("docs/sign-in.md snippet {n} rejected: {e}\n{yaml}");
        }
    }
    // A transition rule: switching the database kind is refused.
    let switched = base(
        "good-0",
        "  version: 1.0.0\n  database: { sqlite: { size: 1Gi } }\n",
    );
    let e = apply_instance(&ns.client, &ns.name, &switched).await.unwrap_err();
    assert!(e.to_string().contains("spec.database"), "{e}");
}
