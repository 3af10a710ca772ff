//! The shared state under collaboration: a handful of Redis primitives (strings, hashes, sets,
//! capped lists, a counter, pub/sub: one channel plus one channel per topic, which a subscriber
//! follows only while it needs it) behind one trait, so that the session logic in `registry` is
//! written once. IO: `RedisBackend` talks to Redis (shared by every replica);
//! `MemoryBackend` keeps the same structures in process memory for a single instance.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc};

/// What the subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// One published payload.
    Message(String),
    /// Payloads may have been lost (the subscription dropped and came back, or this replica fell
    /// behind): every local session must resync from the database.
    Gap,
}

/// Every Redis command collaboration uses. Keys are relative; implementations add their prefix.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// `SET`, with an optional expiry.
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> anyhow::Result<()>;
    /// `SET NX`: whether the key was absent and is now set.
    async fn set_nx(&self, key: &str, value: &str) -> anyhow::Result<bool>;
    async fn del(&self, keys: &[String]) -> anyhow::Result<()>;
    async fn incr(&self, key: &str) -> anyhow::Result<i64>;
    async fn hset(&self, key: &str, field: &str, value: &str) -> anyhow::Result<()>;
    async fn hdel(&self, key: &str, field: &str) -> anyhow::Result<()>;
    /// `HSET` only while the hash has fewer than `cap` fields, in one atomic step (a Lua script on
    /// Redis): whether the field was set. Concurrent callers cannot together exceed `cap`.
    async fn hset_capped(&self, key: &str, field: &str, value: &str, cap: usize) -> anyhow::Result<bool>;
    async fn hgetall(&self, key: &str) -> anyhow::Result<Vec<(String, String)>>;
    async fn sadd(&self, key: &str, member: &str) -> anyhow::Result<()>;
    async fn srem(&self, key: &str, member: &str) -> anyhow::Result<()>;
    async fn smembers(&self, key: &str) -> anyhow::Result<Vec<String>>;
    async fn sismember(&self, key: &str, member: &str) -> anyhow::Result<bool>;
    /// `LPUSH` then `LTRIM` to `cap` entries (newest first).
    async fn push_capped(&self, key: &str, value: &str, cap: usize) -> anyhow::Result<()>;
    /// `LPOP`: the newest entry.
    async fn pop(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Publishes on the collaboration channel.
    async fn publish(&self, payload: &str) -> anyhow::Result<()>;
    /// Starts the subscription to the collaboration channel (and to the followed topics' channels,
    /// see [`Backend::follow`]). Called once per process.
    fn subscribe(&self) -> mpsc::Receiver<Signal>;
    /// Publishes on a topic's own channel: only subscribers that follow the topic get it.
    async fn publish_to(&self, topic: &str, payload: &str) -> anyhow::Result<()> {
        let _ = topic;
        self.publish(payload).await
    }
    /// Adds a topic's channel to the subscription; returns once the subscription is active (or,
    /// while the subscriber connection is down, when it will be resubscribed on reconnecting).
    async fn follow(&self, topic: &str) -> anyhow::Result<()> {
        let _ = topic;
        Ok(())
    }
    /// Drops a topic's channel from the subscription.
    async fn unfollow(&self, topic: &str) -> anyhow::Result<()> {
        let _ = topic;
        Ok(())
    }
    async fn ping(&self) -> anyhow::Result<()>;
}

const SUBSCRIBER_QUEUE: usize = 4096;

#[derive(Default)]
struct Mem {
    strings: HashMap<String, (String, Option<Instant>)>,
    hashes: HashMap<String, HashMap<String, String>>,
    sets: HashMap<String, BTreeSet<String>>,
    lists: HashMap<String, VecDeque<String>>,
}

/// One process's collaboration state.
pub struct MemoryBackend {
    mem: Mutex<Mem>,
    channel: broadcast::Sender<String>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            mem: Mutex::default(),
            channel: broadcast::channel(SUBSCRIBER_QUEUE).0,
        }
    }
}

impl MemoryBackend {
    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Mem>> {
        self.mem
            .lock()
            .map_err(|_| anyhow::anyhow!("collaboration state lock poisoned"))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut mem = self.lock()?;
        let expired = matches!(mem.strings.get(key), Some((_, Some(exp))) if *exp <= Instant::now());
        if expired {
            mem.strings.remove(key);
        }
        Ok(mem.strings.get(key).map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> anyhow::Result<()> {
        let exp = ttl.map(|t| Instant::now() + t);
        self.lock()?
            .strings
            .insert(key.to_owned(), (value.to_owned(), exp));
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str) -> anyhow::Result<bool> {
        let mut mem = self.lock()?;
        let live = matches!(mem.strings.get(key), Some((_, exp)) if exp.is_none_or(|e| e > Instant::now()));
        if live {
            return Ok(false);
        }
        mem.strings.insert(key.to_owned(), (value.to_owned(), None));
        Ok(true)
    }

    async fn del(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut mem = self.lock()?;
        for k in keys {
            mem.strings.remove(k);
            mem.hashes.remove(k);
            mem.sets.remove(k);
            mem.lists.remove(k);
        }
        Ok(())
    }

    async fn incr(&self, key: &str) -> anyhow::Result<i64> {
        let mut mem = self.lock()?;
        let entry = mem
            .strings
            .entry(key.to_owned())
            .or_insert_with(|| ("0".into(), None));
        let next = entry.0.parse::<i64>().unwrap_or(0) + 1;
        entry.0 = next.to_string();
        Ok(next)
    }

    async fn hset(&self, key: &str, field: &str, value: &str) -> anyhow::Result<()> {
        self.lock()?
            .hashes
            .entry(key.to_owned())
            .or_default()
            .insert(field.to_owned(), value.to_owned());
        Ok(())
    }

    async fn hdel(&self, key: &str, field: &str) -> anyhow::Result<()> {
        let mut mem = self.lock()?;
        if let Some(h) = mem.hashes.get_mut(key) {
            h.remove(field);
            if h.is_empty() {
                mem.hashes.remove(key);
            }
        }
        Ok(())
    }

    async fn hset_capped(&self, key: &str, field: &str, value: &str, cap: usize) -> anyhow::Result<bool> {
        let mut mem = self.lock()?;
        let hash = mem.hashes.entry(key.to_owned()).or_default();
        if hash.len() >= cap && !hash.contains_key(field) {
            return Ok(false);
        }
        hash.insert(field.to_owned(), value.to_owned());
        Ok(true)
    }

    async fn hgetall(&self, key: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .lock()?
            .hashes
            .get(key)
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn sadd(&self, key: &str, member: &str) -> anyhow::Result<()> {
        self.lock()?
            .sets
            .entry(key.to_owned())
            .or_default()
            .insert(member.to_owned());
        Ok(())
    }

    async fn srem(&self, key: &str, member: &str) -> anyhow::Result<()> {
        let mut mem = self.lock()?;
        if let Some(s) = mem.sets.get_mut(key) {
            s.remove(member);
            if s.is_empty() {
                mem.sets.remove(key);
            }
        }
        Ok(())
    }

    async fn smembers(&self, key: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .lock()?
            .sets
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn sismember(&self, key: &str, member: &str) -> anyhow::Result<bool> {
        Ok(self.lock()?.sets.get(key).is_some_and(|s| s.contains(member)))
    }

    async fn push_capped(&self, key: &str, value: &str, cap: usize) -> anyhow::Result<()> {
        let mut mem = self.lock()?;
        let list = mem.lists.entry(key.to_owned()).or_default();
        list.push_front(value.to_owned());
        list.truncate(cap);
        Ok(())
    }

    async fn pop(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.lock()?.lists.get_mut(key).and_then(VecDeque::pop_front))
    }

    async fn publish(&self, payload: &str) -> anyhow::Result<()> {
        // No receiver yet is not an error: nobody needs the message.
        let _ = self.channel.send(payload.to_owned());
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<Signal> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut sub = self.channel.subscribe();
        tokio::spawn(async move {
            loop {
                let signal = match sub.recv().await {
                    Ok(m) => Signal::Message(m),
                    Err(broadcast::error::RecvError::Lagged(_)) => Signal::Gap,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The topics a Redis subscriber follows, and the subscriber connection's command half while it
/// is connected.
#[derive(Default)]
struct Topics {
    followed: BTreeSet<String>,
    sink: Option<redis::aio::PubSubSink>,
}

/// Redis shared by every replica.
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    topics: Arc<Mutex<Topics>>,
}

impl RedisBackend {
    /// Connects (lazily when Redis does not answer yet, see `auth::kv::connection_manager`);
    /// `url` holds the password, so errors never include it.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Self::connect_in(url, prefix, "collab:").await
    }

    /// Like `connect`, for another user of these primitives: keys and the channel go under
    /// `<prefix><namespace>`.
    pub async fn connect_in(url: &str, prefix: &str, namespace: &str) -> anyhow::Result<Self> {
        let (client, conn) = crate::auth::kv::connection_manager(url).await?;
        Ok(Self {
            client,
            conn,
            prefix: format!("{prefix}{namespace}"),
            topics: Arc::default(),
        })
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel of a topic.
    fn topic_channel(&self, topic: &str) -> String {
        format!("{}events:{topic}", self.prefix)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        crate::auth::kv::request(&self.conn, |mut c| async move { cmd.query_async(&mut c).await }).await
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.query(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> anyhow::Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        self.query::<()>(&cmd).await
    }

    async fn set_nx(&self, key: &str, value: &str) -> anyhow::Result<bool> {
        let r: Option<String> = self
            .query(redis::cmd("SET").arg(self.key(key)).arg(value).arg("NX"))
            .await?;
        Ok(r.is_some())
    }

    async fn del(&self, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.key(k));
        }
        self.query::<i64>(&cmd).await.map(drop)
    }

    async fn incr(&self, key: &str) -> anyhow::Result<i64> {
        self.query(redis::cmd("INCR").arg(self.key(key))).await
    }

    async fn hset(&self, key: &str, field: &str, value: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("HSET").arg(self.key(key)).arg(field).arg(value))
            .await
            .map(drop)
    }

    async fn hdel(&self, key: &str, field: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("HDEL").arg(self.key(key)).arg(field))
            .await
            .map(drop)
    }

    async fn hset_capped(&self, key: &str, field: &str, value: &str, cap: usize) -> anyhow::Result<bool> {
        const SCRIPT: &str = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 \
            or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then \
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 else return 0 end";
        let set: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(SCRIPT)
                    .arg(1)
                    .arg(self.key(key))
                    .arg(field)
                    .arg(value)
                    .arg(cap),
            )
            .await?;
        Ok(set == 1)
    }

    async fn hgetall(&self, key: &str) -> anyhow::Result<Vec<(String, String)>> {
        let map: HashMap<String, String> = self.query(redis::cmd("HGETALL").arg(self.key(key))).await?;
        Ok(map.into_iter().collect())
    }

    async fn sadd(&self, key: &str, member: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("SADD").arg(self.key(key)).arg(member))
            .await
            .map(drop)
    }

    async fn srem(&self, key: &str, member: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("SREM").arg(self.key(key)).arg(member))
            .await
            .map(drop)
    }

    async fn smembers(&self, key: &str) -> anyhow::Result<Vec<String>> {
        self.query(redis::cmd("SMEMBERS").arg(self.key(key))).await
    }

    async fn sismember(&self, key: &str, member: &str) -> anyhow::Result<bool> {
        self.query(redis::cmd("SISMEMBER").arg(self.key(key)).arg(member))
            .await
    }

    async fn push_capped(&self, key: &str, value: &str, cap: usize) -> anyhow::Result<()> {
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(value)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(cap.saturating_sub(1))
            .ignore();
        let pipe = &pipe;
        crate::auth::kv::request(
            &self.conn,
            |mut c| async move { pipe.query_async::<()>(&mut c).await },
        )
        .await
    }

    async fn pop(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.query(redis::cmd("LPOP").arg(self.key(key))).await
    }

    async fn publish(&self, payload: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(self.channel()).arg(payload))
            .await
            .map(drop)
    }

    async fn publish_to(&self, topic: &str, payload: &str) -> anyhow::Result<()> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(self.topic_channel(topic)).arg(payload))
            .await
            .map(drop)
    }

    async fn follow(&self, topic: &str) -> anyhow::Result<()> {
        let channel = self.topic_channel(topic);
        let sink = {
            let mut t = self.topics();
            t.followed.insert(channel.clone());
            t.sink.clone()
        };
        // Without a connection the subscriber task subscribes every followed topic when it
        // (re)connects.
        if let Some(mut sink) = sink {
            tokio::time::timeout(Duration::from_secs(5), sink.subscribe(&channel))
                .await
                .map_err(|_| anyhow::anyhow!("timed out subscribing to a collaboration channel"))??;
        }
        Ok(())
    }

    async fn unfollow(&self, topic: &str) -> anyhow::Result<()> {
        let channel = self.topic_channel(topic);
        let sink = {
            let mut t = self.topics();
            t.followed.remove(&channel);
            t.sink.clone()
        };
        if let Some(mut sink) = sink {
            tokio::time::timeout(Duration::from_secs(5), sink.unsubscribe(&channel))
                .await
                .map_err(|_| anyhow::anyhow!("timed out unsubscribing from a collaboration channel"))??;
        }
        Ok(())
    }

    /// A task keeps one subscriber connection; when it drops (Redis restarted, network cut) the
    /// task reconnects with backoff and reports a [`Signal::Gap`], since messages published in
    /// between are lost.
    fn subscribe(&self) -> mpsc::Receiver<Signal> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let client = self.client.clone();
        let channel = self.channel();
        let topics = self.topics.clone();
        tokio::spawn(async move {
            let mut first = true;
            let mut backoff = Duration::from_millis(100);
            loop {
                let connected = async {
                    let (mut sink, stream) = client.get_async_pubsub().await?.split();
                    sink.subscribe(&channel).await?;
                    // Publish the sink first, then subscribe what is followed by now: a topic
                    // followed later is subscribed by `follow` through the published sink.
                    let followed: Vec<String> = {
                        let mut t = topics.lock().unwrap_or_else(|p| p.into_inner());
                        t.sink = Some(sink.clone());
                        t.followed.iter().cloned().collect()
                    };
                    if !followed.is_empty() {
                        sink.subscribe(&followed).await?;
                    }
                    Ok::<_, redis::RedisError>(stream)
                };
                match tokio::time::timeout(Duration::from_secs(5), connected).await {
                    Ok(Ok(mut stream)) => {
                        backoff = Duration::from_millis(100);
                        if !first {
                            tracing::info!("collaboration bus: resubscribed to Redis");
                            if tx.send(Signal::Gap).await.is_err() {
                                return;
                            }
                        }
                        first = false;
                        loop {
                            let msg = tokio::select! {
                                msg = stream.next() => msg,
                                // The hub is gone: stop, closing the subscriber connection.
                                () = tx.closed() => return,
                            };
                            let Some(msg) = msg else { break };
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            if tx.send(Signal::Message(payload)).await.is_err() {
                                return;
                            }
                        }
                        topics.lock().unwrap_or_else(|p| p.into_inner()).sink = None;
                        tracing::warn!("collaboration bus: Redis subscription lost; reconnecting");
                        // Whatever was published until the resubscription is lost.
                        if tx.send(Signal::Gap).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        topics.lock().unwrap_or_else(|p| p.into_inner()).sink = None;
                        tracing::warn!(error = ?e.kind(), "collaboration bus: cannot subscribe to Redis");
                    }
                    Err(_) => {
                        topics.lock().unwrap_or_else(|p| p.into_inner()).sink = None;
                        tracing::warn!("collaboration bus: timed out subscribing to Redis");
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        rx
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(b: &dyn Backend) {
        let mut sub = b.subscribe();
        b.ping().await.unwrap();
        assert!(b.set_nx("k", "1").await.unwrap());
        assert!(!b.set_nx("k", "2").await.unwrap(), "set_nx keeps the first value");
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some("1"));
        b.set("t", "x", Some(Duration::from_millis(50))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(b.get("t").await.unwrap(), None, "expired");
        assert_eq!(b.incr("n").await.unwrap(), 1);
        assert_eq!(b.incr("n").await.unwrap(), 2);
        assert!(b.hset_capped("capped", "a", "1", 2).await.unwrap());
        assert!(b.hset_capped("capped", "b", "1", 2).await.unwrap());
        assert!(!b.hset_capped("capped", "c", "1", 2).await.unwrap(), "at the cap");
        assert!(
            b.hset_capped("capped", "a", "2", 2).await.unwrap(),
            "an existing field may change"
        );
        b.hset("h", "a", "1").await.unwrap();
        b.hset("h", "b", "2").await.unwrap();
        b.hdel("h", "a").await.unwrap();
        assert_eq!(
            b.hgetall("h").await.unwrap(),
            vec![("b".to_owned(), "2".to_owned())]
        );
        b.sadd("s", "x").await.unwrap();
        assert!(b.sismember("s", "x").await.unwrap());
        b.srem("s", "x").await.unwrap();
        assert!(b.smembers("s").await.unwrap().is_empty());
        for i in 0..5 {
            b.push_capped("l", &i.to_string(), 3).await.unwrap();
        }
        assert_eq!(b.pop("l").await.unwrap().as_deref(), Some("4"), "newest first");
        assert_eq!(b.pop("l").await.unwrap().as_deref(), Some("3"));
        assert_eq!(b.pop("l").await.unwrap().as_deref(), Some("2"));
        assert_eq!(b.pop("l").await.unwrap(), None, "capped at 3");
        b.del(&["k".into(), "h".into(), "n".into()]).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        assert!(b.hgetall("h").await.unwrap().is_empty());
        // Redis subscriptions become active asynchronously; publish until one arrives.
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                b.publish("hello").await.unwrap();
                if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
                    return s;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, Signal::Message("hello".into()));
    }

    #[tokio::test]
    async fn memory_backend() {
        exercise(&MemoryBackend::default()).await;
    }

    #[tokio::test]
    async fn redis_backend() {
        let url = std::env::var("TMI_TEST_REDIS_URL")
            .expect("TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts Redis");
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        exercise(&RedisBackend::connect(&url, &prefix).await.unwrap()).await;
    }
}
