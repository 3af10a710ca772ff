//! Short-lived auth state (OAuth state, PKCE bindings, refresh tokens, revocations) behind one
//! trait with two implementations: `RedisKv` (shared by replicas) and `MemoryKv` (one process).
//! IO: `RedisKv` talks to Redis; `MemoryKv` only to memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;

/// A string key-value store with expiry and atomic take.
#[async_trait]
pub trait TokenKv: Send + Sync {
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()>;
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Reads and deletes in one step, so a value is consumed at most once.
    async fn take(&self, key: &str) -> anyhow::Result<Option<String>>;
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Adds one to the counter at `key` and returns the new count. A new counter expires `ttl`
    /// after its first increment; later increments keep that expiry (a fixed window).
    async fn incr(&self, key: &str, ttl: Duration) -> anyhow::Result<i64>;
    async fn ping(&self) -> anyhow::Result<()>;
}

/// In-process store for a single instance.
#[derive(Default)]
pub struct MemoryKv {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryKv {
    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>>> {
        self.entries
            .lock()
            .map_err(|_| anyhow::anyhow!("token store lock poisoned"))
    }
}

#[async_trait]
impl TokenKv for MemoryKv {
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        let mut map = self.lock()?;
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, exp)| *exp > now);
        }
        map.insert(key.to_owned(), (value.to_owned(), now + ttl));
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let map = self.lock()?;
        Ok(map
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone()))
    }

    async fn take(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut map = self.lock()?;
        Ok(map
            .remove(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.lock()?.remove(key);
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> anyhow::Result<i64> {
        let mut map = self.lock()?;
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, exp)| *exp > now);
        }
        let running = map
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .and_then(|(v, exp)| v.parse::<i64>().ok().map(|n| (n, *exp)));
        let (count, exp) = match running {
            Some((n, exp)) => (n + 1, exp),
            None => (1, now + ttl),
        };
        map.insert(key.to_owned(), (count.to_string(), exp));
        Ok(count)
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A Redis client for `url` (which holds the password: errors never include it), with Nagle off
/// so that small commands and messages are not held back.
pub fn redis_client(url: &str) -> anyhow::Result<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|_| anyhow::anyhow!("invalid Redis URL"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(|_| anyhow::anyhow!("invalid Redis URL"))
}

/// A client and a managed connection for `url`. A Redis that does not answer at start is not
/// fatal: the connection is then made lazily and retried on use, the server starts, and
/// `/readyz` answers 503 until Redis answers (instead of a crash loop that delays recovery).
/// Only an invalid URL is an error.
pub async fn connection_manager(url: &str) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client = redis_client(url)?;
    // Few, quick reconnection attempts per request: a request fails fast while Redis is down
    // (and is retried by the next one), instead of hanging behind a long backoff.
    let config = || {
        redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
    };
    let first = ConnectionManager::new_with_config(client.clone(), config());
    match tokio::time::timeout(Duration::from_secs(10), first).await {
        Ok(Ok(conn)) => return Ok((client, conn)),
        Ok(Err(e)) => tracing::warn!(
            error = e.kind_str(),
            "Redis does not answer; starting without it and retrying (/readyz answers 503 meanwhile)"
        ),
        Err(_) => tracing::warn!(
            "timed out connecting to Redis; starting without it and retrying (/readyz answers 503 meanwhile)"
        ),
    }
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config())
        .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {}", e.kind_str()))?;
    Ok((client, conn))
}

/// Bound of one Redis request (a reconnection included), so that an outage fails requests
/// quickly instead of hanging them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one Redis request (`send` gets a handle on the managed connection). A request that
/// failed on a dropped connection is sent once more, on the connection the manager
/// re-establishes, so a Redis restart costs no request. Errors carry the error kind only.
pub async fn request<T, F, Fut>(conn: &ConnectionManager, send: F) -> anyhow::Result<T>
where
    F: Fn(ConnectionManager) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    for attempt in 0..2 {
        match tokio::time::timeout(REQUEST_TIMEOUT, send(conn.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e))
                if attempt == 0
                    && (e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()) => {}
            Ok(Err(e)) => return Err(anyhow::anyhow!("Redis command failed: {}", e.kind_str())),
            Err(_) => return Err(anyhow::anyhow!("Redis command timed out")),
        }
    }
    Err(anyhow::anyhow!("Redis command failed"))
}

/// Redis-backed store; every key gets `prefix`.
pub struct RedisKv {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisKv {
    /// Connects; `url` holds the password, so errors never include it.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let (_, conn) = connection_manager(url).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        request(&self.conn, |mut c| async move { cmd.query_async(&mut c).await }).await
    }
}

/// `INCR`, and `EXPIRE` when the counter is new.
const INCR_WITH_EXPIRY: &str = "local n = redis.call('INCR', KEYS[1]) \
    if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n";

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

#[async_trait]
impl TokenKv for RedisKv {
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1)),
        )
        .await
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.query(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn take(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.query(redis::cmd("GETDEL").arg(self.key(key))).await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await
            .map(drop)
    }

    async fn incr(&self, key: &str, ttl: Duration) -> anyhow::Result<i64> {
        // One script, so the increment and the expiry of a new counter are atomic (a counter
        // without an expiry would never reset).
        self.query(
            redis::cmd("EVAL")
                .arg(INCR_WITH_EXPIRY)
                .arg(1)
                .arg(self.key(key))
                .arg(ttl.as_secs().max(1)),
        )
        .await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(kv: &dyn TokenKv) {
        kv.ping().await.unwrap();
        kv.set("a", "1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(kv.take("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(kv.take("a").await.unwrap(), None, "take consumes");
        kv.set("b", "2", Duration::from_secs(60)).await.unwrap();
        kv.delete("b").await.unwrap();
        assert_eq!(kv.get("b").await.unwrap(), None);
        // Counters count from one, and a later increment keeps the window of the first.
        assert_eq!(kv.incr("n", Duration::from_secs(1)).await.unwrap(), 1);
        assert_eq!(kv.incr("n", Duration::from_secs(600)).await.unwrap(), 2);
        kv.delete("n").await.unwrap();
        assert_eq!(kv.incr("n", Duration::from_secs(1)).await.unwrap(), 1, "deleted");
        // Expiry (WebSocket tickets live 30 s, OAuth state minutes): an expired value is gone.
        kv.set("short", "x", Duration::from_secs(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(kv.take("short").await.unwrap(), None, "expired");
        assert_eq!(
            kv.incr("n", Duration::from_secs(600)).await.unwrap(),
            1,
            "the window ended"
        );
    }

    #[tokio::test]
    async fn memory_kv() {
        exercise(&MemoryKv::default()).await;
    }

    #[tokio::test]
    async fn redis_kv() {
        let url = std::env::var("TMI_TEST_REDIS_URL")
            .expect("TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts Redis");
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        exercise(&RedisKv::connect(&url, &prefix).await.unwrap()).await;
    }
}
