//! Contract test: what the operator renders is enough for a real tmi-server to serve.
//!
//! The operator reconciles an instance with external PostgreSQL and Redis on the local control plane. The test
//! then reads back the rendered Deployment's environment, resolving `envFrom` ConfigMaps and `secretKeyRef`s
//! exactly as the kubelet would, points the service hosts in it at the local PostgreSQL and Redis, starts the
//! `tmi-server` binary with exactly that environment (plus a free port, and the trusted CA written where the
//! pod would mount it), and proves it serves: health, dev login, a threat model created and read back, and
//! sign-in through the two external providers it was given (a GitHub-style one and an OpenID Connect one)
//! accepted at startup and offered, the GitHub one redirecting to GitHub with the rendered parameters.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use sha2::{Digest, Sha256};
use sqlx::Connection;

/// Host names the Secrets use, as they would inside a cluster; replaced by the local services' addresses.
const DB_HOST: &str = "postgres.databases.svc:5432";
const REDIS_HOST: &str = "redis.caches.svc:6379";

fn env_or_fail(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the local PostgreSQL and Redis; run it through `make test`"
        )
    })
}

/// `scheme://[userinfo@]host:port/...` → the `host:port` part.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

fn tmi_server_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/tmi-server");
    if !bin.is_file() {
        // `cargo test --workspace` builds it; a lone `cargo test -p tmi-operator` may not have.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "tmi-server"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p tmi-server failed");
    }
    bin
}

/// The container environment as the kubelet would build it: `envFrom` ConfigMaps and Secrets first, then
/// `env` entries (later ones win), with `secretKeyRef`/`configMapKeyRef` resolved.
async fn container_env(client: &kube::Client, ns: &str, d: &Deployment) -> BTreeMap<String, String> {
    let container = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut env = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        if let Some(cm) = &from.config_map_ref {
            env.extend(config_maps.get(&cm.name).await.unwrap().data.unwrap_or_default());
        }
        if let Some(s) = &from.secret_ref {
            for (k, v) in secrets.get(&s.name).await.unwrap().data.unwrap_or_default() {
                env.insert(k, String::from_utf8(v.0).unwrap());
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(r) = &from.secret_key_ref {
                    let data = secrets.get(&r.name).await.unwrap().data.unwrap_or_default();
                    String::from_utf8(data[&r.key].0.clone()).unwrap()
                } else if let Some(r) = &from.config_map_key_ref {
                    config_maps.get(&r.name).await.unwrap().data.unwrap_or_default()[&r.key].clone()
                } else {
                    panic!("unsupported valueFrom in {}", e.name)
                }
            }
            (None, None) => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    env
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rendered_environment_runs_a_real_server() {
    let admin_url = env_or_fail("TMI_TEST_DATABASE_URL");
    let redis_url = env_or_fail("TMI_TEST_REDIS_URL");
    let (local_db, local_redis) = (host_port(&admin_url), host_port(&redis_url));

    // A database of our own on the local PostgreSQL.
    let db_name = format!("tmi_contract_{:08x}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let local_db_url = {
        let (prefix, rest) = admin_url.split_once("://").unwrap();
        let (userinfo, _) = rest.split_once('@').map_or(("", rest), |(u, r)| (u, r));
        let auth = if userinfo.is_empty() {
            String::new()
        } else {
            format!("{userinfo}@")
        };
        format!("{prefix}://{auth}{DB_HOST}/{db_name}")
    };
    let cluster_redis_url = redis_url.replace(&local_redis, REDIS_HOST);

    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-contract").await;
    let c = &ns.client;
    install_crd(c).await;
    put_secret(c, &ns.name, "tmi-db", &[("url", &local_db_url)]).await;
    put_secret(c, &ns.name, "tmi-redis", &[("url", &cluster_redis_url)]).await;
    put_secret(
        c,
        &ns.name,
        "tmi-oauth",
        &[
            ("github-id", "gh-client-4711"),
            ("github-secret", "gh-secret"),
            ("sso-id", "sso-client"),
            ("sso-secret", "sso-secret"),
        ],
    )
    .await;
    // A real PEM CA (the control plane's) as the identity provider's private CA.
    let ca_pem = std::fs::read_to_string(cp.dir().join("pki/ca.crt")).unwrap();
    let ca: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "idp-ca" }, "data": { "bundle.pem": ca_pem },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .create(&Default::default(), &ca)
        .await
        .unwrap();
    let op = Operator::start(config(&ns.name)).await;
    let yaml = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: contract }
spec:
  version: 1.0.0
  buildMode: Test
  database: { external: { urlSecretRef: { name: tmi-db, key: url } } }
  cache: { external: { urlSecretRef: { name: tmi-redis, key: url } } }
  auth:
    devLogin: true
    trustedCA: { configMapKeyRef: { name: idp-ca, key: bundle.pem } }
    providers:
      - id: github
        name: GitHub
        clientIdSecretRef: { name: tmi-oauth, key: github-id }
        clientSecretSecretRef: { name: tmi-oauth, key: github-secret }
        authorizationUrl: https://github.com/login/oauth/authorize
        tokenUrl: https://github.com/login/oauth/access_token
        scopes: ["read:user", "user:email"]
        userinfo:
          - { url: https://api.github.com/user, claims: { subject: id, name: name } }
          - { url: https://api.github.com/user/emails, claims: { email: "[0].email" } }
        additionalParams: { allow_signup: "false" }
        authHeaderFormat: token %s
        acceptHeader: application/vnd.github+json
      # An OpenID Connect provider nobody listens for (the server only warns that it is not reachable yet).
      - id: corp-sso
        name: Corporate SSO
        clientIdSecretRef: { name: tmi-oauth, key: sso-id }
        clientSecretSecretRef: { name: tmi-oauth, key: sso-secret }
        issuer: https://127.0.0.1:9/realms/tmi
        userinfo: [{ url: https://127.0.0.1:9/realms/tmi/userinfo, claims: { groups: groups } }]
  server:
    env: [{ name: TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST, value: "http://localhost:8079/" }]
"#;
    apply_instance(c, &ns.name, yaml).await.unwrap();
    wait_for(c, &ns.name, "contract", "Ready", |i| {
        has_condition(i, "Ready", "True")
    })
    .await;
    let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .get("contract-server")
        .await
        .unwrap();
    let mut env = container_env(c, &ns.name, &d).await;
    op.stop().await;

    // What the operator rendered, checked before anything is changed.
    assert_eq!(env["TMI_BUILD_MODE"], "test");
    assert_eq!(env["OAUTH_PROVIDERS_TMI_ENABLED"], "true");
    assert!(env["TMI_DATABASE_URL"].contains(DB_HOST));
    assert!(env["TMI_REDIS_URL"].contains(REDIS_HOST));
    assert_eq!(env["TMI_REDIS_KEY_PREFIX"], format!("tmi:{}:contract:", ns.name));
    assert!(env["TMI_JWT_SECRET"].len() >= 32);
    assert_eq!(env["OAUTH_PROVIDERS_GITHUB_CLIENT_ID"], "gh-client-4711");
    assert_eq!(
        env["OAUTH_PROVIDERS_CORP_SSO_ISSUER"],
        "https://127.0.0.1:9/realms/tmi"
    );

    // The trusted CA, where the kubelet would mount it: the volume's key, under the mount path.
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().is_some_and(|c| c.name == "idp-ca"))
        .unwrap();
    let item = &volume.config_map.as_ref().unwrap().items.as_ref().unwrap()[0];
    assert_eq!(item.key, "bundle.pem");
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        env["TMI_OAUTH_CA_FILE"],
        format!("{}/{}", mount.mount_path, item.path)
    );
    let ca_file = std::env::temp_dir().join(format!("tmi-contract-ca-{db_name}.pem"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    env.insert("TMI_OAUTH_CA_FILE".into(), ca_file.to_str().unwrap().to_owned());

    // Point the service hosts at the local services, and pick a free port.
    for v in env.values_mut() {
        *v = v.replace(DB_HOST, &local_db).replace(REDIS_HOST, &local_redis);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.insert("TMI_SERVER_PORT".into(), port.to_string());
    env.insert("TMI_SERVER_INTERFACE".into(), "127.0.0.1".into());

    let log = std::env::temp_dir().join(format!("tmi-contract-{port}.log"));
    let mut cmd = Command::new(tmi_server_binary());
    cmd.env_clear()
        .envs(&env)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap().try_clone().unwrap());
    cmd.stdin(Stdio::null());
    let mut server = Server(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "tmi-server exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tmi-server never became ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        http.get(format!("{base}/livez"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // Dev login (PKCE, the `tmi` provider).
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let r = http
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("idp", "tmi"),
            ("scope", "openid profile email"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("client_callback", "http://localhost:8079/"),
            ("state", "contract"),
            ("login_hint", "alice"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let code = code.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=");
    let r = http
        .post(format!("{base}/oauth2/token?idp=tmi"))
        .json(&serde_json::json!({
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": "http://localhost:8079/"
        }))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "token: {}",
        r.text().await.unwrap_or_default()
    );
    let token = r.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both external providers are offered next to the dev login.
    let providers: serde_json::Value = http
        .get(format!("{base}/oauth2/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: BTreeMap<String, String> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(names["github"], "GitHub", "{providers}");
    assert_eq!(names["corp-sso"], "Corporate SSO", "{providers}");

    // The GitHub sign-in goes to GitHub with the client id from the Secret, the instance's callback URL, the
    // scopes and the extra parameter.
    let r = http
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("idp", "github"),
            ("scope", "openid profile email"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("client_callback", "http://localhost:8079/"),
            ("state", "contract"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        to.as_str().split('?').next(),
        Some("https://github.com/login/oauth/authorize")
    );
    let q: BTreeMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "gh-client-4711");
    assert_eq!(
        q["redirect_uri"],
        format!("http://contract.{}.svc/oauth2/callback", ns.name)
    );
    assert_eq!(q["scope"], "read:user user:email");
    assert_eq!(q["allow_signup"], "false");

    // A threat model created and read back.
    let r = http
        .post(format!("{base}/threat_models"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "Operator contract" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create: {}", r.text().await.unwrap_or_default());
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .get(format!("{base}/threat_models/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["name"],
        "Operator contract"
    );

    drop(server);
    let _ = std::fs::remove_file(&ca_file);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}
