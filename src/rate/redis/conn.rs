//! The two kinds of Redis a shared limit talks to: one server, and a Redis
//! Cluster, whose scripts may only touch the keys of one hash slot.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

/// Where a Redis-backed limit keeps its buckets; what
/// [`RateLimitBuilder::redis`](crate::rate::RateLimitBuilder::redis) takes,
/// made from a [`redis::Client`] or a [`redis::cluster::ClusterClient`].
///
/// ```
/// use tower_spillway::rate::{Quota, RateLimitLayer, RedisOptions};
///
/// // Three primaries of a Redis Cluster; the client finds the others.
/// let cluster = redis::cluster::ClusterClient::new(vec![
///     "redis://10.0.0.1:6379/",
///     "redis://10.0.0.2:6379/",
///     "redis://10.0.0.3:6379/",
/// ])
/// .expect("valid URLs");
/// let limit = RateLimitLayer::builder(Quota::per_second(500)?)
///     .http()
///     .redis(cluster, RedisOptions::new("shop:api"))
///     .build();
/// # let _ = limit;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisClient {
    /// One Redis server (a primary, or a proxy that runs multi-key
    /// scripts): every batch is one pipeline, and one script call decides
    /// up to 64 buckets.
    Server(redis::Client),
    /// A Redis Cluster: the buckets of a batch are grouped by hash slot,
    /// each slot's in calls of their own, sent to the node that serves the
    /// slot. Buckets of different keys seldom share a slot, so a keyed
    /// limit makes about one call per key in a batch, spread over the
    /// shards.
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(client) => f.debug_tuple("Server").field(client).finish(),
            Self::Cluster(_) => f.debug_tuple("Cluster").finish_non_exhaustive(),
        }
    }
}

impl From<redis::Client> for RedisClient {
    fn from(client: redis::Client) -> Self {
        Self::Server(client)
    }
}

impl From<ClusterClient> for RedisClient {
    fn from(client: ClusterClient) -> Self {
        Self::Cluster(Box::new(client))
    }
}

/// A connection of either kind. Both multiplex: clones share it, and
/// commands sent from several tasks at once go out back to back.
#[derive(Clone)]
pub(super) enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisClient {
    /// A new connection, within `timeout`; requests replied to within
    /// `response_timeout`.
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Conn> {
        match self {
            Self::Server(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(response_timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Server(conn))
            }
            // The cluster client carries its own timeouts, the user's to
            // set; this bounds the whole discovery of the slots.
            Self::Cluster(client) => {
                match tokio::time::timeout(timeout, client.get_async_connection()).await {
                    Ok(conn) => Ok(Conn::Cluster(conn?)),
                    Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
                }
            }
        }
    }
}

impl Conn {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Sends `pipe` and reads its replies; a command's error is its reply.
    /// On a cluster the pipeline goes to the node of its keys' slot, which
    /// must be one.
    pub(super) async fn pipeline(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipe, 0, pipe.len()).await,
            Self::Cluster(conn) => conn.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }

    /// Sends one command: on a cluster, to every node if the command is
    /// for all of them (`SCRIPT LOAD`).
    pub(super) async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd).await,
            Self::Cluster(conn) => conn.req_packed_command(cmd).await,
        }
    }
}
