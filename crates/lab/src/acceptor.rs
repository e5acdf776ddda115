//! Thread-per-connection serving for the lab's embedded servers ([`crate::HttpServer`],
//! [`crate::stream::StreamServer`]): an accept thread, one thread per connection, and a stop that
//! closes every connection and joins every thread.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread cannot leave these plain collections half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Conns {
    stop: AtomicBool,
    /// A clone of every open connection, so `drop` can wake its blocked reader.
    open: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Accepts on a listener and serves each connection on its own thread with `serve(stream, id,
/// stop)`, ids counting up in accept order. Dropping it stops accepting, shuts every open
/// connection down and joins every thread.
pub(crate) struct Acceptor {
    listener: TcpListener,
    conns: Arc<Conns>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(crate) fn start(
        listener: TcpListener,
        name: &str,
        serve: impl Fn(TcpStream, u64, &AtomicBool) + Send + Sync + 'static,
    ) -> io::Result<Acceptor> {
        let conns = Arc::new(Conns::default());
        let (l, c) = (listener.try_clone()?, Arc::clone(&conns));
        let prefix = name.to_string();
        let serve = Arc::new(serve);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || accept_loop(&l, &c, &prefix, serve))?;
        Ok(Acceptor {
            listener,
            conns,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.conns.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket makes a blocked accept fail with EINVAL on Linux.
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Read);
        for stream in lock(&self.conns.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let workers = std::mem::take(&mut *lock(&self.conns.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    conns: &Arc<Conns>,
    name: &str,
    serve: Arc<impl Fn(TcpStream, u64, &AtomicBool) + Send + Sync + 'static>,
) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if conns.stop.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        // Registering under the lock that `drop` takes after setting `stop` guarantees that every
        // connection is either shut down by `drop` or refused here.
        let mut open = lock(&conns.open);
        if conns.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(clone) = stream.try_clone() else {
            continue; // out of descriptors: drop the connection
        };
        open.insert(id, clone);
        drop(open);
        let (c, serve) = (Arc::clone(conns), Arc::clone(&serve));
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn-{id}"))
            .spawn(move || {
                serve(stream, id, &c.stop);
                lock(&c.open).remove(&id);
            });
        let mut workers = lock(&conns.workers);
        workers.retain(|w| !w.is_finished());
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(_) => {
                lock(&conns.open).remove(&id);
            }
        }
    }
}
