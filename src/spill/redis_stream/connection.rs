//! One connection to Redis, made again after it breaks.

use std::time::Duration;

use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};

use super::super::store::StoreError;

/// One multiplexed connection, made again after it breaks.
pub(super) struct Connection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    live: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Connection {
    pub(super) fn new(client: redis::Client, timeout: Duration) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Self {
            client,
            config,
            live: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn get(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut live = self.live.lock().await;
        if let Some(conn) = &*live {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(StoreError::new)?;
        *live = Some(conn.clone());
        Ok(conn)
    }

    /// Drops a connection that failed other than by the server's answer
    /// (an error reply means the connection itself is fine).
    pub(super) async fn failed(&self, err: &redis::RedisError) {
        if err.code().is_none() {
            *self.live.lock().await = None;
        }
    }
}
